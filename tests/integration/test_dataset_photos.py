"""A manifest's photos: local paths and URLs from a real image server (fetched once into the
cache), missing files and undecodable photos named by line, and --skip-invalid's count."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from models.dataset.dataset import Dataset, DatasetOptions, InvalidDatasetError, load_dataset
from models.network import variant
from models.settings import FetchSettings, ImageSettings
from tests.imageserver import ImageServer
from tests.photos import jpeg_bytes, photo

PRE = variant("efficientnet-lite0").preprocessing()
FETCH = FetchSettings(allow_private_image_hosts=True, fetch_retries=0)


@pytest.fixture(autouse=True)
def _logs_outlive_the_test() -> Iterator[None]:
    """The command line points structlog at the stderr of the moment, a capture this test
    closes: later tests log to the process's own stderr again."""
    yield
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__))


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


async def test_local_files_and_urls_are_resolved_and_urls_are_fetched_once(
    tmp_path: Path, image_server: ImageServer
) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(jpeg_bytes(photo("coffee")))
    url = image_server.add("remote/b.jpg", jpeg_bytes(photo("chelsea")))
    manifest = _write(
        tmp_path / "manifest.jsonl",
        [
            {
                "listing_id": "A",
                "photos": ["photos/a.jpg", url],
                "category": "home/mugs",
                "attributes": {"colour": "brown"},
            },
            {"listing_id": "B", "photos": [url], "buyer_photos": ["photos/a.jpg"], "group": "G"},
        ],
    )
    options = DatasetOptions(manifest=manifest, cache=tmp_path / "cache", split="1,0,0")

    def load() -> Dataset:
        return load_dataset(options, FETCH, ImageSettings(), PRE)

    dataset = await asyncio.to_thread(load)
    assert image_server.count("remote/b.jpg") == 1
    assert dataset.fetched == 1
    a, b = dataset.listings
    assert a.photos[0] == str(tmp_path / "photos" / "a.jpg")
    assert Path(a.photos[1]).parent == tmp_path / "cache"
    assert await asyncio.to_thread(Path(a.photos[1]).read_bytes) == jpeg_bytes(photo("chelsea"))
    assert a.labels == {"category": "home/mugs", "top_level": "home", "colour": "brown"}
    assert b.group == "g:G" and a.group == "l:A"
    assert dataset.attributes == ["colour"]
    # A second run reads the cache: the server is not asked again.
    await asyncio.to_thread(load)
    assert image_server.count("remote/b.jpg") == 1


async def test_missing_undecodable_and_unreachable_photos_are_named_by_line(
    tmp_path: Path, image_server: ImageServer
) -> None:
    good = jpeg_bytes(photo("coffee"))
    (tmp_path / "good.jpg").write_bytes(good)
    (tmp_path / "broken.jpg").write_bytes(good[: len(good) // 3])
    (tmp_path / "text.jpg").write_bytes(b"hello, not a photo")
    gone = image_server.url("gone.jpg")
    manifest = _write(
        tmp_path / "manifest.jsonl",
        [
            {"listing_id": "A", "photos": ["good.jpg"]},
            {"listing_id": "B", "photos": ["missing.jpg"]},
            {"listing_id": "C", "photos": ["good.jpg", "broken.jpg"]},
            {"listing_id": "D", "photos": ["text.jpg"]},
            {"listing_id": "E", "photos": [gone]},
            {"listing_id": "F", "photos": ["good.jpg"], "buyer_photos": ["missing.jpg"]},
        ],
    )
    options = DatasetOptions(manifest=manifest, cache=tmp_path / "cache")
    with pytest.raises(InvalidDatasetError) as caught:
        await asyncio.to_thread(load_dataset, options, FETCH, ImageSettings(), PRE)
    reasons = {b.lineno: b.reason for b in caught.value.bad}
    assert sorted(reasons) == [2, 3, 4, 5, 6]
    assert reasons[2] == "photo missing.jpg: no such file"
    assert reasons[3].startswith("photo broken.jpg: cannot decode")
    assert reasons[4].startswith("photo text.jpg: cannot decode")
    assert reasons[5].startswith(f"photo {gone}: cannot fetch")
    assert reasons[6] == "photo missing.jpg: no such file"

    # --skip-invalid: bad photos are left out, listings without a seller photo are skipped.
    skipping = options.model_copy(update={"skip_invalid": True})
    dataset = await asyncio.to_thread(load_dataset, skipping, FETCH, ImageSettings(), PRE)
    kept = {x.listing_id: x for x in dataset.listings}
    assert sorted(kept) == ["A", "C", "F"]
    assert len(kept["C"].photos) == 1 and kept["F"].buyer_photos == ()
    assert sorted({b.lineno for b in dataset.skipped}) == [2, 3, 4, 5, 6]


async def test_private_hosts_are_refused_without_the_setting(
    tmp_path: Path, image_server: ImageServer
) -> None:
    url = image_server.add("x.jpg", jpeg_bytes(photo("coffee")))
    manifest = _write(tmp_path / "m.jsonl", [{"listing_id": "A", "photos": [url]}])
    options = DatasetOptions(manifest=manifest)
    with pytest.raises(InvalidDatasetError) as caught:
        await asyncio.to_thread(load_dataset, options, FetchSettings(), ImageSettings(), PRE)
    assert "cannot fetch" in caught.value.bad[0].reason
    assert image_server.count("x.jpg") == 0


def test_dataset_fetch_reports_the_splits_or_the_bad_lines(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # capfd, not capsys: the command configures logging onto the stderr of the moment, which
    # must outlive this test.
    from lookalike.cli import main

    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(photo("coffee")))
    rows: list[dict[str, object]] = [
        {"listing_id": f"L{i}", "photos": ["a.jpg"], "category": "home/mugs", "split": split}
        for i, split in enumerate(["train", "train", "val", "test"])
    ]
    manifest = _write(tmp_path / "m.jsonl", rows)
    with pytest.raises(SystemExit) as exit_:
        main(["dataset", "fetch", str(manifest)])
    out = capfd.readouterr().out
    assert exit_.value.code == 0
    assert "train 2 listings (2 photos), val 1 listings (1 photos), test 1 listings" in out
    assert "tasks category, top_level" in out

    _write(manifest, [*rows, {"listing_id": "L9", "photos": ["nope.jpg"]}])
    with pytest.raises(SystemExit) as exit_:
        main(["dataset", "fetch", str(manifest)])
    assert exit_.value.code == 2
    assert f"{manifest}:5: photo nope.jpg: no such file" in capfd.readouterr().err
