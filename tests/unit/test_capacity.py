"""bench.capacity: the plan follows the measured figures, and several results files read as one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.capacity import GIB, main, plan, read_results


def measured(size: int, quantization: str, **figures: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "size": size,
        "dim": 256,
        "quantization": quantization,
        "fitted": True,
        "rss_per_listing_b": 1000.0,
        "disk_per_listing_b": 4000.0,
        "p50_ms": 10.0,
        "recall_at_10": 0.9,
        "hnsw_ef": 256,
        "acorn": False,
        "oversampling": 2.0,
    }
    return result | figures


def write(path: Path, results: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"results": results}))
    return path


def test_plan_scales_the_largest_measured_index_and_its_latency_growth() -> None:
    results = [
        measured(100_000, "int8", rss_per_listing_b=3000.0, p50_ms=10.0),
        measured(1_000_000, "int8", rss_per_listing_b=1.5 * GIB / 1e6, p50_ms=30.0),
        # Other search settings, and an index that did not fit, are not the served figures.
        measured(1_000_000, "int8", hnsw_ef=512, rss_per_listing_b=9e9),
        measured(1_000_000, "int8", oversampling=4.0, rss_per_listing_b=9e9, p50_ms=1.0),
        measured(1_000_000, "int8", acorn=True, rss_per_listing_b=9e9, p50_ms=1.0),
        measured(10_000_000, "int8", fitted=False, rss_per_listing_b=9e9),
    ]
    (row,) = plan(results, 100_000_000, 256, node_ram_gib=64, headroom=0.5, replication=2)
    assert row["measured_at"] == 1_000_000
    assert row["ram_gib"] == pytest.approx(1.5 * 100 * 2)  # 1.5 GiB a million, 100M, 2 copies
    assert row["disk_gib"] == pytest.approx(4000.0 * 100_000_000 * 2 / GIB)
    assert row["nodes"] == 10  # 300 GiB over 32 GiB usable a node
    # 3x per tenfold, two more decades beyond 1M.
    assert row["p50_ms_one_node_estimate"] == pytest.approx(30.0 * 9)


def test_ram_is_the_hot_set_where_it_was_measured() -> None:
    hot = measured(1_000_000, "int8", rss_per_listing_b=1000.0, hot_per_listing_b=2000.0)
    older = measured(1_000_000, "none", rss_per_listing_b=3000.0)
    rows = {r["quantization"]: r for r in plan([hot, older], 2**30, 256, 64, 0.7, 1)}
    assert rows["int8"]["ram_gib"] == pytest.approx(2000.0)
    assert rows["none"]["ram_gib"] == pytest.approx(3000.0)


def test_a_kind_measured_once_has_no_latency_estimate() -> None:
    (row,) = plan([measured(100_000, "none")], 1_000_000, 256, 64, 0.7, 1)
    assert row["quantization"] == "none"
    assert row["p50_ms_one_node_estimate"] is None
    assert row["nodes"] == 1


def test_results_files_read_together_the_later_one_wins(tmp_path: Path) -> None:
    old = write(tmp_path / "a.json", [measured(100_000, "none", p50_ms=12.0)])
    new = write(
        tmp_path / "b.json",
        [measured(100_000, "none", p50_ms=9.0), measured(1_000_000, "none", p50_ms=18.0)],
    )
    merged = read_results([old, new])
    assert sorted((r["size"], r["p50_ms"]) for r in merged) == [(100_000, 9.0), (1_000_000, 18.0)]


def test_main_prints_a_row_per_measured_quantization(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = write(tmp_path / "small.json", [measured(100_000, "int8", p50_ms=10.0)])
    big = write(tmp_path / "big.json", [measured(1_000_000, "int8", p50_ms=20.0)])
    main(["--results", str(small), str(big), "--listings", "10000000"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("10,000,000 listings, 256-d, 2 copies")
    (row,) = [line for line in lines if line.split() and line.split()[0] == "int8"]
    # From the 1M index, p50 doubling per tenfold: 40 ms at 10M.
    assert row.split()[1] == "1000000"
    assert row.endswith("40.0ms")
