"""`lookalike backfill`: a catalog and its vectors written in bulk, with the indexer's guard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.duplicates import group_key
from models.network import load_model
from models.settings import StoreSettings
from models.store.factory import open_store
from tests.cli_process import run_cli

pytestmark = pytest.mark.slow


def upsert(listing_id: str, version: int, photos: int, title: str) -> dict[str, Any]:
    return {
        "type": "listing.upserted",
        "listing_id": listing_id,
        "version": version,
        "occurred_at": "2026-12-01T10:00:00Z",
        "state": "active",
        "title": title,
        "category": "home_and_living/kitchen/mugs",
        "price": {"amount": "12.00", "currency": "EUR"},
        "shop_id": "S1",
        "images": [{"url": f"https://cdn.example/{listing_id}/{i}.jpg"} for i in range(photos)],
    }


async def run(index: Path, *argv: str) -> tuple[int, str, str]:
    return await run_cli(*argv, env={"LOOKALIKE_INDEX_PATH": str(index)}, within_s=120)


async def test_a_backfill_writes_each_listing_once_under_the_version_guard(
    tmp_path: Path,
) -> None:
    net = load_model()
    events = [
        upsert("L1", 1, 2, "first"),
        upsert("L2", 3, 1, "two"),
        upsert("L1", 2, 1, "second"),  # the same listing again: a later batch, a newer version
        {
            "type": "listing.deleted",
            "listing_id": "L3",
            "version": 5,
            "occurred_at": "2026-12-01T11:00:00Z",
        },
        upsert("L2", 1, 1, "stale"),  # older than what the file wrote before: no change
    ]
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(e) + "\n" for e in events))
    rng = np.random.default_rng(5)
    rows = rng.standard_normal((5, net.dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    np.save(tmp_path / "short.npy", rows[:4])
    np.save(tmp_path / "vectors.npy", rows)
    index = tmp_path / "index"

    # Vectors that cannot be the catalog's are refused before anything is written.
    short, full = str(tmp_path / "short.npy"), str(tmp_path / "vectors.npy")
    code, _, err = await run(index, "backfill", str(catalog), "--vectors", short)
    assert code == 2 and "5 photos" in err, err

    code, out, err = await run(index, "backfill", str(catalog), "--vectors", full)
    assert code == 0, err
    assert "4 upserts and 1 removals" in out

    store = open_store(StoreSettings(index_path=index), net.model_id, net.dim)
    await store.ensure_collection()
    try:
        first = await store.get("L1", with_vectors=True)
        assert first is not None and first.version == 2 and first.payload["title"] == "second"
        np.testing.assert_allclose(np.array(first.vectors), rows[3:4], atol=1e-5)
        second = await store.get("L2", with_vectors=True)
        assert second is not None and second.version == 3 and second.payload["title"] == "two"
        np.testing.assert_allclose(np.array(second.vectors), rows[2:3], atol=1e-5)
        assert second.payload["model_id"] == net.model_id
        gone = await store.get("L3")
        assert gone is not None and gone.tombstone and gone.version == 5
        assert await store.count() == 2
        hits = await store.search([rows[3].tolist()], 1)
        assert [h.listing_id for h in hits] == ["L1"]
    finally:
        await store.close()


async def test_a_backfill_groups_copies_and_builds_the_index_unless_told_not_to(
    tmp_path: Path,
) -> None:
    net = load_model()
    rng = np.random.default_rng(9)
    photo = rng.standard_normal(net.dim).astype(np.float32)
    other = rng.standard_normal(net.dim).astype(np.float32)
    rows = np.stack([photo, photo, other])
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    catalog = tmp_path / "catalog.jsonl"
    # Two shops' listings of the same photo, and an unrelated one.
    events = [upsert("A", 1, 1, "a"), upsert("B", 1, 1, "copy of a"), upsert("C", 1, 1, "c")]
    catalog.write_text("".join(json.dumps(e) + "\n" for e in events))
    np.save(tmp_path / "vectors.npy", rows)

    async def groups(index: Path, *flags: str) -> dict[str, str]:
        code, out, err = await run(
            index, "backfill", str(catalog), "--vectors", str(tmp_path / "vectors.npy"), *flags
        )
        assert code == 0, err
        # The search index is built after the writes, unless that is left to the worker.
        assert ("search index built" in out) == ("--no-optimize" not in flags), out
        store = open_store(StoreSettings(index_path=index), net.model_id, net.dim)
        await store.ensure_collection()
        try:
            found = {lid: await store.get(lid) for lid in "ABC"}
        finally:
            await store.close()
        return {lid: group_key(s.payload, lid) for lid, s in found.items() if s is not None}

    grouped = await groups(tmp_path / "grouped")
    assert grouped["B"] == grouped["A"] != grouped["C"]
    apart = await groups(tmp_path / "apart", "--no-grouping", "--no-optimize")
    assert len(set(apart.values())) == 3
