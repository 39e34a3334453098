"""The dataset manifest: the issue's example validates against `lookalike schema dataset`, bad
lines are named by number with the reason, and the split is deterministic, by group, stratified."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import jsonschema_rs
import pytest

from lookalike.cli import main
from models.dataset.manifest import ManifestLine, format_bad, parse_line, read_manifest
from models.dataset.split import SplitShares, assign_splits

EXAMPLE = {
    "listing_id": "L1",
    "group": "P7",
    "category": "home_and_living/kitchen/mugs",
    "attributes": {"colour": "red", "material": "ceramic", "shape": "round"},
    "photos": ["photos/L1-0.jpg", "https://cdn.example.com/L1-1.jpg"],
    "buyer_photos": ["reviews/r123.jpg"],
    "split": "test",
}


def _schema(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    with pytest.raises(SystemExit) as exit_:
        main(["schema", "dataset"])
    assert exit_.value.code == 0
    schema: dict[str, object] = json.loads(capsys.readouterr().out)
    return schema


def test_the_schema_accepts_the_documented_example_and_what_the_parser_accepts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    validator = jsonschema_rs.validator_for(_schema(capsys))
    assert validator.is_valid(EXAMPLE)
    assert validator.is_valid({"listing_id": "L2", "photos": ["a.jpg"]})
    for bad in (
        {"listing_id": "L3"},
        {"listing_id": "L3", "photos": []},
        {"listing_id": "L3", "photos": [f"{i}.jpg" for i in range(11)]},
        {"listing_id": "L3", "photos": ["a.jpg"], "split": "holdout"},
        {"listing_id": "L3", "photos": ["a.jpg"], "buyer_photo": ["b.jpg"]},
    ):
        assert not validator.is_valid(bad), bad
        with pytest.raises(ValueError):
            ManifestLine.model_validate(bad)
    line = parse_line(json.dumps(EXAMPLE))
    assert line.top_level == "home_and_living"


def test_bad_lines_are_listed_with_their_numbers_and_reasons(tmp_path: Path) -> None:
    path = tmp_path / "manifest.jsonl"
    rows = [
        json.dumps({"listing_id": "A", "photos": ["a.jpg"]}),
        "{not json",
        "",
        json.dumps([1, 2]),
        json.dumps({"listing_id": "B", "photos": []}),
        json.dumps({"listing_id": "A", "photos": ["b.jpg"]}),
        json.dumps({"listing_id": "C", "photos": ["c.jpg"], "split": "holdout"}),
        json.dumps({"listing_id": "D", "photos": ["d.jpg"], "colour": "red"}),
    ]
    path.write_text("\n".join(rows) + "\n")
    manifest = read_manifest(path)
    assert [n for n, _ in manifest.lines] == [1]
    reasons = {b.lineno: b.reason for b in manifest.bad}
    assert sorted(reasons) == [2, 4, 5, 6, 7, 8]
    assert reasons[2].startswith("not JSON")
    assert "not a JSON object" in reasons[4]
    assert reasons[5].startswith("photos:")
    assert "repeats line 1" in reasons[6]
    assert reasons[7].startswith("split:")
    assert reasons[8].startswith("colour:")
    text = format_bad(path, manifest.bad)
    assert text.splitlines()[0].startswith(f"{path}:2: not JSON")


def _lines(rows: list[dict[str, object]]) -> list[tuple[int, ManifestLine]]:
    return [(n, ManifestLine.model_validate(r)) for n, r in enumerate(rows, start=1)]


def test_the_split_is_deterministic_by_group_and_stratified_by_top_level_category() -> None:
    rows: list[dict[str, object]] = []
    for g in range(200):
        top = "common" if g < 180 else "rare"
        for k in range(1 + g % 3):
            rows.append(
                {
                    "listing_id": f"L{g}-{k}",
                    "group": f"G{g}",
                    "category": f"{top}/x",
                    "photos": ["p.jpg"],
                }
            )
    lines = _lines(rows)
    shares = SplitShares.parse("0.7,0.1,0.2")
    splits, bad = assign_splits(lines, shares, seed=3)
    assert bad == []
    # The same seed gives the same split whatever the order of the lines; another seed another.
    again, _ = assign_splits(list(reversed(lines)), shares, seed=3)
    assert again == splits
    assert assign_splits(lines, shares, seed=4)[0] != splits
    by_group: dict[str, set[str]] = {}
    for _, line in lines:
        by_group.setdefault(str(line.group), set()).add(splits[line.listing_id])
    assert all(len(s) == 1 for s in by_group.values())
    groups = Counter(next(iter(s)) for s in by_group.values())
    assert groups == {"train": 140, "val": 20, "test": 40}
    rare = Counter(next(iter(by_group[f"G{g}"])) for g in range(180, 200))
    assert rare == {"train": 14, "val": 2, "test": 4}


def test_a_pinned_line_pins_its_group_and_contradicting_pins_are_bad_lines() -> None:
    rows: list[dict[str, object]] = [
        {"listing_id": "A1", "group": "A", "photos": ["p.jpg"], "split": "test"},
        {"listing_id": "A2", "group": "A", "photos": ["p.jpg"]},
        {"listing_id": "B1", "group": "B", "photos": ["p.jpg"], "split": "train"},
        {"listing_id": "B2", "group": "B", "photos": ["p.jpg"], "split": "val"},
        *({"listing_id": f"X{i}", "photos": ["p.jpg"]} for i in range(10)),
    ]
    splits, bad = assign_splits(_lines(rows), SplitShares(), seed=0)
    assert splits["A1"] == splits["A2"] == "test"
    assert [b.lineno for b in bad] == [4]
    assert "pinned at line 3" in bad[0].reason
    assert "B2" not in splits


def test_split_shares_parse() -> None:
    assert SplitShares.parse("7,1,2") == SplitShares(0.7, 0.1, 0.2)
    for text in ("0.7,0.3", "a,b,c", "-1,1,1", "0,0,0"):
        with pytest.raises(ValueError):
            SplitShares.parse(text)


def test_the_readme_documents_every_field_and_its_example_is_valid() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Your own data\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE))
    assert documented == set(ManifestLine.model_fields)
    example = re.search(r"```json\n(.*?)```", section, flags=re.DOTALL)
    assert example is not None
    assert parse_line(" ".join(example.group(1).split("\n"))) == parse_line(json.dumps(EXAMPLE))
