"""Grouping a bulk write (backfill): against the live collection in one batched search, and
against the batch's earlier listings, equal to grouping them one at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from models.duplicates import GROUP_FIELD, Grouped, batch_groups, group_key, new_group
from models.settings import StoreSettings
from models.store.factory import open_store
from models.store.types import ListingPoint, SearchFilters, VectorStore

DIM = 32
THRESHOLD = 0.96
Matrix = npt.NDArray[np.float32]


def unit(rows: Matrix) -> Matrix:
    out: Matrix = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    return out


def photos(rng: np.random.Generator, n: int) -> Matrix:
    return unit(rng.standard_normal((n, DIM)).astype(np.float32))


def copy_of(rows: Matrix, rng: np.random.Generator) -> Matrix:
    """Another shop's upload of the same photos: nudged far less than the threshold allows."""
    return unit(rows + 0.01 * rng.standard_normal(rows.shape).astype(np.float32))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[VectorStore]:
    s = open_store(StoreSettings(index_path=tmp_path / "index"), "m-groups", DIM)
    await s.ensure_collection()
    try:
        yield s
    finally:
        await s.close()


async def one_at_a_time(store: VectorStore, batch: list[Grouped]) -> list[str]:
    """The oracle: each listing searched alone, then compared with every earlier one in turn."""
    groups: list[str] = []
    for i, listing in enumerate(batch):
        others = SearchFilters(exclude_listing_ids=(listing.listing_id,))
        hits = await store.search(listing.vectors, 1, others, min_score=THRESHOLD)
        found = (group_key(hits[0].payload, hits[0].listing_id), hits[0].score) if hits else None
        mine = np.asarray(listing.vectors, dtype=np.float32)
        for j in range(i):
            if batch[j].listing_id == listing.listing_id:
                continue
            theirs = np.asarray(batch[j].vectors, dtype=np.float32)
            score = float((mine @ theirs.T).max(axis=1).mean())
            if score >= THRESHOLD and (found is None or score > found[1]):
                found = (groups[j], score)
        groups.append(found[0] if found else new_group(listing.listing_id, listing.version))
    return groups


async def test_a_batch_joins_live_groups_and_its_own_copies(store: VectorStore) -> None:
    rng = np.random.default_rng(3)
    live = photos(rng, 2)
    payload = {"listing_id": "LIVE", "state": "active", "version": 1, GROUP_FIELD: "g-live"}
    await store.upsert_listing(ListingPoint("LIVE", live.tolist(), payload))
    first, lone = photos(rng, 3), photos(rng, 1)
    batch = [
        Grouped("COPY-OF-LIVE", 1, copy_of(live, rng).tolist()),
        Grouped("FIRST", 1, first.tolist()),
        Grouped("LONE", 1, lone.tolist()),
        Grouped("COPY-OF-FIRST", 1, copy_of(first, rng).tolist()),
        # A newer version of a listing earlier in the batch is not its own duplicate.
        Grouped("LONE", 2, lone.tolist()),
    ]
    groups = await batch_groups(store, batch, THRESHOLD)
    assert groups == [
        "g-live",
        new_group("FIRST", 1),
        new_group("LONE", 1),
        new_group("FIRST", 1),
        new_group("LONE", 2),
    ]
    assert groups == await one_at_a_time(store, batch)
    # Grouping off: every listing its own group, and no search is made.
    assert await batch_groups(store, batch, None) == [
        new_group(g.listing_id, g.version) for g in batch
    ]
    assert await batch_groups(store, [], THRESHOLD) == []


async def test_a_random_batch_groups_as_one_listing_at_a_time(store: VectorStore) -> None:
    rng = np.random.default_rng(11)
    originals = [photos(rng, int(n)) for n in rng.integers(1, 5, size=30)]
    for i, rows in enumerate(originals[:10]):
        payload = {"listing_id": f"L{i}", "state": "active", "version": 1, GROUP_FIELD: f"g-{i}"}
        await store.upsert_listing(ListingPoint(f"L{i}", rows.tolist(), payload))
    batch: list[Grouped] = []
    for i in range(60):
        # Two thirds copies of a live or an earlier original, the rest new photos.
        pick = int(rng.integers(0, 45))
        rows = copy_of(originals[pick], rng) if pick < 30 else photos(rng, int(rng.integers(1, 4)))
        batch.append(Grouped(f"B{i}", 1, rows.tolist()))
    groups = await batch_groups(store, batch, THRESHOLD)
    assert groups == await one_at_a_time(store, batch)
    assert len(set(groups)) < len(batch), "some copies found their group"
    assert set(groups) & {f"g-{i}" for i in range(10)}, "some joined a live group"
