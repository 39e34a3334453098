"""The vector store contract, against real Qdrant Edge on disk and qdrant-client's local mode."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import qdrant_edge as qe
from qdrant_client import AsyncQdrantClient

from models.settings import StoreSettings
from models.store.edge import EdgeStore
from models.store.factory import (
    aliased_model_id,
    collection_name_for,
    open_store,
    resolve_alias,
)
from models.store.filters import PAYLOAD_INDEXES
from models.store.server import ServerStore
from models.store.types import (
    DimensionMismatch,
    ListingNotFound,
    ListingPoint,
    SearchFilters,
    StoreError,
    VectorStore,
    category_prefixes,
)

DIM = 64
ALIAS = "listings"

Matrix = npt.NDArray[np.float32]


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> Matrix:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    out: Matrix = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def near(v: Matrix, rng: np.random.Generator, noise: float = 0.05) -> Matrix:
    """Another photo of the same thing: the vector nudged a little."""
    return unit_rows(v + noise * rng.standard_normal(v.shape).astype(np.float32))


def unit_rows(v: Matrix) -> Matrix:
    out: Matrix = v / np.linalg.norm(v, axis=-1, keepdims=True)
    return out


@dataclass
class Listing:
    listing_id: str
    vectors: Matrix
    category: str
    price: float
    shop_id: str
    state: str = "active"
    extra: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {
            "listing_id": self.listing_id,
            "title": f"title of {self.listing_id}",
            "category": self.category,
            "category_path": category_prefixes(self.category),
            "price": self.price,
            "price_amount": f"{self.price:.2f}",
            "currency": "USD",
            "shop_id": self.shop_id,
            "state": self.state,
            "image_urls": [
                f"http://img.test/{self.listing_id}/{i}.jpg" for i in range(len(self.vectors))
            ],
            "version": 1,
            **self.extra,
        }

    def point(self) -> ListingPoint:
        return ListingPoint(self.listing_id, self.vectors.tolist(), self.payload())


CATEGORIES = [
    "home/kitchen/mugs",
    "home/kitchen/plates",
    "home/decor",
    "art/prints",
]


def make_catalog(seed: int = 7, n: int = 40) -> list[Listing]:
    rng = np.random.default_rng(seed)
    catalog = []
    for i in range(n):
        catalog.append(
            Listing(
                listing_id=f"L{i:03d}",
                vectors=unit(rng, 1 + i % 3),
                category=CATEGORIES[i % len(CATEGORIES)],
                price=float(5 * (i % 10) + 0.5),
                shop_id=f"S{i % 5}",
                state="active" if i % 7 else "sold",
            )
        )
    return catalog


def maxsim_order(catalog: list[Listing], query: Matrix) -> list[str]:
    """Independent oracle: listings by MaxSim score (sum over query rows of the best cosine)."""
    scores = {
        item.listing_id: float((unit_rows(query) @ item.vectors.T).max(axis=1).sum())
        for item in catalog
    }
    return sorted(scores, key=lambda lid: -scores[lid])


# -- backends ----------------------------------------------------------------------------------


@dataclass
class Backend:
    """Opens stores of one kind that all see the same data, like the processes of a deployment."""

    kind: str
    settings: StoreSettings
    make: Callable[[str, int], VectorStore]

    def open(self, model_id: str = "m1", dim: int = DIM) -> VectorStore:
        return self.make(model_id, dim)


@pytest.fixture(params=["edge", "server"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "edge":
        settings = StoreSettings(index_path=tmp_path / "index", collection_alias=ALIAS)
        yield Backend("edge", settings, lambda m, d: open_store(settings, m, d))
        return
    # One client for the whole test stands in for the server: stores closing must not wipe it.
    client = AsyncQdrantClient(location=":memory:")

    async def keep() -> None:
        return None

    settings = StoreSettings(qdrant_url=":memory:", collection_alias=ALIAS)
    yield Backend(
        "server",
        settings,
        lambda m, d: ServerStore(
            client, ALIAS, collection_name_for(ALIAS, m), d, release=keep, local_mode=True
        ),
    )
    await client.close()


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[VectorStore]:
    s = backend.open()
    await s.ensure_collection()
    yield s
    await s.close()


@pytest.fixture
async def catalog(store: VectorStore) -> list[Listing]:
    items = make_catalog()
    for item in items:
        await store.upsert_listing(item.point())
    return items


async def alias_target(backend: Backend) -> str | None:
    if backend.kind == "edge":
        return await resolve_alias(backend.settings)
    probe = backend.open("probe")
    assert isinstance(probe, ServerStore)
    try:
        return await probe.alias_target()
    finally:
        await probe.close()


async def appears(path: Path, timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s / 0.005)):
        if await asyncio.to_thread(path.exists):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{path} never appeared")


async def build_started(backend: Backend) -> None:
    """Edge: wait until the shard was copied, so the next writes land while the copy is built."""
    if backend.kind == "edge":
        await appears(backend.settings.index_path / ".listings__m1.optimizing")


def ids(hits: list[Any]) -> list[str]:
    return [h.listing_id for h in hits]


# -- writes and reads ----------------------------------------------------------------------------


async def test_upsert_then_get_returns_payload_and_vectors(store: VectorStore) -> None:
    rng = np.random.default_rng(1)
    item = Listing("L1", unit(rng, 2), "home/decor", 12.5, "S1")
    await store.upsert_listing(item.point())

    without = await store.get("L1")
    assert without is not None
    assert without.listing_id == "L1"
    assert without.payload == item.payload()
    assert without.vectors == []

    with_vectors = await store.get("L1", with_vectors=True)
    assert with_vectors is not None
    np.testing.assert_allclose(np.array(with_vectors.vectors), item.vectors, atol=1e-5)

    assert await store.get("absent") is None
    assert await store.vector_size() == DIM


async def test_reupserting_a_listing_keeps_one_point(store: VectorStore) -> None:
    rng = np.random.default_rng(2)
    first = Listing("L1", unit(rng, 3), "home/decor", 10.0, "S1")
    await store.upsert_listing(first.point())
    await store.upsert_listing(first.point())  # a redelivered event
    second = Listing("L1", unit(rng, 1), "art/prints", 20.0, "S2", extra={"version": 2})
    await store.upsert_listing(second.point())

    assert await store.count() == 1
    got = await store.get("L1", with_vectors=True)
    assert got is not None
    assert got.payload["category"] == "art/prints"
    assert len(got.vectors) == 1
    np.testing.assert_allclose(np.array(got.vectors), second.vectors, atol=1e-5)


async def test_wrong_dimension_writes_and_queries_are_refused(store: VectorStore) -> None:
    rng = np.random.default_rng(3)
    with pytest.raises(DimensionMismatch, match=f"{DIM + 1}.*{DIM}"):
        await store.upsert_listing(ListingPoint("L1", unit(rng, 1, DIM + 1).tolist(), {}))
    with pytest.raises(DimensionMismatch):
        await store.search(unit(rng, 1, DIM - 1).tolist(), 5)
    with pytest.raises(ValueError):
        await store.upsert_listing(ListingPoint("L1", [], {}))
    assert await store.count() == 0


async def test_delete_removes_and_tolerates_absent(
    store: VectorStore, catalog: list[Listing]
) -> None:
    target = catalog[1]
    await store.delete(target.listing_id)
    await store.delete(target.listing_id)
    await store.delete("never-indexed")

    assert await store.get(target.listing_id) is None
    assert await store.count() == len(catalog) - 1
    hits = await store.search(target.vectors.tolist(), 10)
    assert target.listing_id not in ids(hits)


async def test_set_payload_merges_and_leaves_vectors(
    store: VectorStore, catalog: list[Listing]
) -> None:
    target = catalog[1]
    before = await store.get(target.listing_id, with_vectors=True)
    assert before is not None

    await store.set_payload(target.listing_id, {"title": "renamed", "price": 99.0, "new": [1, 2]})

    after = await store.get(target.listing_id, with_vectors=True)
    assert after is not None
    assert after.payload == {**before.payload, "title": "renamed", "price": 99.0, "new": [1, 2]}
    assert after.vectors == before.vectors
    hits = await store.search(target.vectors.tolist(), 1, SearchFilters(price_min=90))
    assert ids(hits) == [target.listing_id]

    await store.set_payload("never-indexed", {"title": "x"})
    assert await store.get("never-indexed") is None
    with pytest.raises(ValueError):
        await store.set_payload(target.listing_id, {"listing_id": "other"})


async def test_scroll_pages_through_every_listing(
    store: VectorStore, catalog: list[Listing]
) -> None:
    seen = [item async for item in store.scroll(page_size=7)]
    assert sorted(s.listing_id for s in seen) == sorted(i.listing_id for i in catalog)
    assert all(s.vectors == [] for s in seen)

    by_id = {i.listing_id: i for i in catalog}
    with_vectors = [item async for item in store.scroll(with_vectors=True, page_size=16)]
    assert len(with_vectors) == len(catalog)
    for s in with_vectors:
        np.testing.assert_allclose(np.array(s.vectors), by_id[s.listing_id].vectors, atol=1e-5)


async def test_count_with_and_without_filters(store: VectorStore, catalog: list[Listing]) -> None:
    active = [i for i in catalog if i.state == "active"]
    assert len(active) < len(catalog)
    assert await store.count() == len(catalog)
    assert await store.count(SearchFilters()) == len(active)
    assert await store.count(SearchFilters(only_active=False)) == len(catalog)
    assert await store.count(SearchFilters(shop_id="S2")) == sum(
        1 for i in active if i.shop_id == "S2"
    )


# -- versions and tombstones ---------------------------------------------------------------------


def versioned(item: Listing, version: int | None, **changes: Any) -> ListingPoint:
    """The item's point at another version (None: written without one) with payload changes."""
    payload = {**item.payload(), **changes}
    if version is None:
        del payload["version"]
    else:
        payload["version"] = version
    return ListingPoint(item.listing_id, item.vectors.tolist(), payload)


async def live_ids(store: VectorStore, query: Matrix) -> set[str]:
    found = set(ids(await store.search(query.tolist(), 100, SearchFilters(only_active=False))))
    return found | set(ids(await store.search(query.tolist(), 100)))


async def test_an_older_or_equal_version_changes_nothing(store: VectorStore) -> None:
    rng = np.random.default_rng(30)
    item = Listing("L1", unit(rng, 2), "home/decor", 10.0, "S1")
    await store.upsert_listing(versioned(item, 5, title="v5"))
    await store.upsert_listing(versioned(item, 4, title="v4", price=1.0))
    await store.upsert_listing(versioned(item, 5, title="v5 again"))
    other = ListingPoint("L1", unit(rng, 1).tolist(), {**item.payload(), "version": 3})
    await store.upsert_listing(other)

    got = await store.get("L1", with_vectors=True)
    assert got is not None
    assert (got.version, got.payload["title"], got.payload["price"]) == (5, "v5", 10.0)
    np.testing.assert_allclose(np.array(got.vectors), item.vectors, atol=1e-5)
    assert await store.count(SearchFilters(price_max=2.0)) == 0

    await store.upsert_listing(versioned(item, 6, title="v6"))
    got = await store.get("L1")
    assert got is not None
    assert (got.version, got.payload["title"]) == (6, "v6")


async def test_a_bulk_write_guards_each_listing_by_its_own_version(store: VectorStore) -> None:
    rng = np.random.default_rng(35)
    items = {
        f"L{i}": Listing(f"L{i}", unit(rng, 1 + i % 3), "home/decor", 10.0, "S1") for i in range(6)
    }
    await store.upsert_listing(versioned(items["L1"], 5, title="v5"))
    await store.upsert_listing(versioned(items["L2"], 1, title="v1"))
    await store.tombstone("L5", 9, "removed")

    await store.upsert_listings(
        [
            versioned(items["L1"], 3, title="stale"),  # older than the stored 5: nothing
            versioned(items["L2"], 4, title="v4"),  # newer: applies
            versioned(items["L3"], 1, title="new"),  # absent: inserted
            versioned(items["L4"], None, title="legacy"),  # unversioned: always applies
            versioned(items["L5"], 2, title="resurrected?"),  # older than its tombstone
            versioned(items["L0"], 7, title="seven"),
        ]
    )

    titles = {}
    for lid in ("L0", "L1", "L2", "L3", "L4"):
        got = await store.get(lid, with_vectors=True)
        assert got is not None, lid
        titles[lid] = (got.version, got.payload["title"])
        np.testing.assert_allclose(np.array(got.vectors), items[lid].vectors, atol=1e-5)
    assert titles == {
        "L0": (7, "seven"),
        "L1": (5, "v5"),
        "L2": (4, "v4"),
        "L3": (1, "new"),
        "L4": (None, "legacy"),
    }
    tombstone = await store.get("L5")
    assert tombstone is not None and tombstone.tombstone and tombstone.version == 9
    assert await store.count() == 5
    with pytest.raises(ValueError, match="twice"):
        await store.upsert_listings([versioned(items["L0"], 8), versioned(items["L0"], 9)])
    await store.upsert_listings([])


async def test_unversioned_writes_apply_and_legacy_points_take_any_version(
    store: VectorStore,
) -> None:
    rng = np.random.default_rng(31)
    item = Listing("L1", unit(rng, 1), "home/decor", 10.0, "S1")
    await store.upsert_listing(versioned(item, 9, title="v9"))
    # Benches and the eval harness write without versions: those writes are unconditional.
    await store.upsert_listing(versioned(item, None, title="legacy"))
    got = await store.get("L1")
    assert got is not None
    assert (got.version, got.payload["title"]) == (None, "legacy")
    # A point without a version is older than any versioned write.
    await store.upsert_listing(versioned(item, 0, title="v0"))
    got = await store.get("L1")
    assert got is not None
    assert (got.version, got.payload["title"]) == (0, "v0")


async def test_a_tombstone_hides_the_listing_and_stops_older_writes(
    store: VectorStore, catalog: list[Listing]
) -> None:
    target = next(i for i in catalog if i.state == "active" and len(i.vectors) == 2)
    query = target.vectors[:1]
    assert target.listing_id in await live_ids(store, query)

    await store.tombstone(target.listing_id, 5, "sold_out")

    stone = await store.get(target.listing_id, with_vectors=True)
    assert stone is not None
    assert stone.tombstone
    assert stone.version == 5
    assert stone.vectors == []
    assert set(stone.payload) == {"listing_id", "version", "state", "tombstone", "tombstoned_at"}
    assert stone.payload["state"] == "sold_out"
    assert isinstance(stone.payload["tombstoned_at"], float)

    async def gone() -> None:
        assert target.listing_id not in await live_ids(store, query)
        assert await store.count() == len(catalog) - 1
        assert await store.count(SearchFilters(only_active=False)) == len(catalog) - 1
        with pytest.raises(ListingNotFound):
            await store.similar(target.listing_id, 5)
        others = await store.similar(catalog[0].listing_id, 100, SearchFilters(only_active=False))
        assert target.listing_id not in ids(others)
        got = await store.get(target.listing_id)
        assert got is not None
        assert got.tombstone
        assert got.version == 5

    await gone()
    # Older events arriving late, redelivered ones, payload updates: none brings it back.
    await store.upsert_listing(versioned(target, 4))
    await store.upsert_listing(versioned(target, 5))
    await store.set_payload(target.listing_id, {"state": "active", "version": 7})
    await store.set_payload(target.listing_id, {"state": "active"})
    await gone()
    # An older tombstone does not replace a newer one.
    await store.tombstone(target.listing_id, 3, "deleted")
    await gone()
    stone = await store.get(target.listing_id)
    assert stone is not None
    assert stone.payload["state"] == "sold_out"

    # A newer upsert revives it, with its vectors.
    await store.upsert_listing(versioned(target, 6, title="back"))
    back = await store.get(target.listing_id, with_vectors=True)
    assert back is not None
    assert not back.tombstone
    assert (back.version, back.payload["title"]) == (6, "back")
    np.testing.assert_allclose(np.array(back.vectors), target.vectors, atol=1e-5)
    assert target.listing_id in await live_ids(store, query)
    assert await store.count() == len(catalog)
    assert target.listing_id not in ids(await store.similar(target.listing_id, 100))


async def test_a_tombstone_of_an_older_version_leaves_the_listing(
    store: VectorStore, catalog: list[Listing]
) -> None:
    target = next(i for i in catalog if i.state == "active")
    await store.upsert_listing(versioned(target, 4))
    await store.tombstone(target.listing_id, 4, "deleted")
    await store.tombstone(target.listing_id, 2, "deleted")
    got = await store.get(target.listing_id)
    assert got is not None
    assert not got.tombstone
    assert got.version == 4
    assert await store.count() == len(catalog)


async def test_a_tombstone_of_an_absent_listing_stops_older_upserts(store: VectorStore) -> None:
    rng = np.random.default_rng(32)
    item = Listing("L1", unit(rng, 1), "home/decor", 10.0, "S1")
    # A deletion that overtook the listing's creation.
    await store.tombstone("L1", 3, "deleted")
    await store.upsert_listing(versioned(item, 2))
    got = await store.get("L1")
    assert got is not None
    assert got.tombstone
    assert got.version == 3
    assert await store.count() == 0
    assert await store.search(item.vectors.tolist(), 5, SearchFilters(only_active=False)) == []


async def test_set_payload_applies_only_a_newer_version(store: VectorStore) -> None:
    rng = np.random.default_rng(33)
    item = Listing("L1", unit(rng, 1), "home/decor", 10.0, "S1")
    await store.upsert_listing(versioned(item, 2, title="v2"))

    await store.set_payload("L1", {"title": "v1", "version": 1})
    await store.set_payload("L1", {"title": "v2 again", "version": 2})
    got = await store.get("L1")
    assert got is not None
    assert (got.version, got.payload["title"]) == (2, "v2")

    await store.set_payload("L1", {"title": "v3", "price": 50.0, "version": 3})
    got = await store.get("L1", with_vectors=True)
    assert got is not None
    assert (got.version, got.payload["title"], got.payload["price"]) == (3, "v3", 50.0)
    np.testing.assert_allclose(np.array(got.vectors), item.vectors, atol=1e-5)

    await store.set_payload("absent", {"title": "x", "version": 1})
    assert await store.get("absent") is None


async def test_purge_tombstones_deletes_only_old_tombstones(
    store: VectorStore, catalog: list[Listing]
) -> None:
    old, recent = catalog[:2], catalog[2]
    for item in old:
        await store.tombstone(item.listing_id, 5, "deleted")
    await asyncio.sleep(0.02)
    cutoff = time.time()
    await asyncio.sleep(0.02)
    await store.tombstone(recent.listing_id, 5, "inactive")

    assert await store.purge_tombstones(cutoff) == 2
    for item in old:
        assert await store.get(item.listing_id) is None
    kept = await store.get(recent.listing_id)
    assert kept is not None
    assert kept.tombstone
    assert await store.count() == len(catalog) - 3
    assert await store.purge_tombstones(cutoff) == 0

    assert await store.purge_tombstones(time.time() + 1) == 1
    assert await store.get(recent.listing_id) is None
    assert await store.count() == len(catalog) - 3
    # Once purged, the version is forgotten: any upsert applies again.
    await store.upsert_listing(versioned(old[0], 1))
    assert await store.get(old[0].listing_id) is not None


async def test_scroll_shows_tombstones_only_when_asked(
    store: VectorStore, catalog: list[Listing]
) -> None:
    stoned = {catalog[3].listing_id, catalog[4].listing_id}
    for listing_id in stoned:
        await store.tombstone(listing_id, 2, "deleted")

    live = [s async for s in store.scroll(page_size=7)]
    assert {s.listing_id for s in live} == {i.listing_id for i in catalog} - stoned
    assert not any(s.tombstone for s in live)

    every = [s async for s in store.scroll(with_vectors=True, page_size=7, include_tombstones=True)]
    assert {s.listing_id for s in every} == {i.listing_id for i in catalog}
    assert {s.listing_id for s in every if s.tombstone} == stoned
    assert all(s.vectors == [] for s in every if s.tombstone)
    assert all(s.vectors != [] for s in every if not s.tombstone)


async def test_only_tombstone_writes_a_tombstone_field(store: VectorStore) -> None:
    rng = np.random.default_rng(34)
    item = Listing("L1", unit(rng, 1), "home/decor", 10.0, "S1")
    with pytest.raises(ValueError, match="tombstone"):
        await store.upsert_listing(versioned(item, 1, tombstone=True))
    await store.upsert_listing(versioned(item, 1))
    with pytest.raises(ValueError, match="tombstone"):
        await store.set_payload("L1", {"tombstone": False})
    got = await store.get("L1")
    assert got is not None
    assert not got.tombstone


async def test_tombstones_written_during_optimize_survive_it_and_a_reopen(
    backend: Backend, catalog: list[Listing], store: VectorStore
) -> None:
    target, revived = catalog[1], catalog[5]
    await store.tombstone(revived.listing_id, 2, "deleted")
    optimizing = asyncio.create_task(store.optimize())
    await build_started(backend)
    await store.tombstone(target.listing_id, 9, "deleted")
    await store.upsert_listing(versioned(target, 8))
    await store.upsert_listing(versioned(revived, 3, title="revived"))
    await store.set_payload(catalog[6].listing_id, {"title": "stale", "version": 1})
    await optimizing

    async def check(s: VectorStore) -> None:
        stone = await s.get(target.listing_id)
        assert stone is not None
        assert stone.tombstone
        assert stone.version == 9
        back = await s.get(revived.listing_id)
        assert back is not None
        assert (back.tombstone, back.payload["title"]) == (False, "revived")
        unchanged = await s.get(catalog[6].listing_id)
        assert unchanged is not None
        assert unchanged.payload["title"] == f"title of {catalog[6].listing_id}"
        assert await s.count() == len(catalog) - 1
        assert target.listing_id not in await live_ids(s, target.vectors)

    await check(store)
    await store.close()
    reopened = backend.open()
    await reopened.ensure_collection()
    try:
        await check(reopened)
    finally:
        await reopened.close()


# -- search --------------------------------------------------------------------------------------


async def test_a_listing_is_found_by_any_of_its_photos(
    store: VectorStore, catalog: list[Listing]
) -> None:
    rng = np.random.default_rng(4)
    several = [i for i in catalog if len(i.vectors) == 3 and i.state == "active"]
    assert several
    for item in several:
        for photo in range(3):
            query = near(item.vectors[photo : photo + 1], rng)
            hits = await store.search(query.tolist(), 3)
            assert hits[0].listing_id == item.listing_id
            assert hits[0].matched_image_index == photo
            assert hits[0].payload["image_urls"][photo].endswith(f"/{photo}.jpg")
            assert hits[0].score > 0.9


async def test_search_ranks_by_maxsim_best_first(
    store: VectorStore, catalog: list[Listing]
) -> None:
    rng = np.random.default_rng(5)
    active = [i for i in catalog if i.state == "active"]
    for n_query in (1, 2):
        query = unit(rng, n_query)
        hits = await store.search(query.tolist(), 5)
        assert ids(hits) == maxsim_order(active, query)[:5]
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
    assert await store.search(unit(rng, 1).tolist(), 0) == []


@pytest.mark.parametrize(
    ("prefix", "categories"),
    [
        ("home", {"home/kitchen/mugs", "home/kitchen/plates", "home/decor"}),
        ("home/kitchen", {"home/kitchen/mugs", "home/kitchen/plates"}),
        ("home/kitchen/mugs", {"home/kitchen/mugs"}),
        ("/home/kitchen/", {"home/kitchen/mugs", "home/kitchen/plates"}),
        ("home/kit", set()),
        ("art", {"art/prints"}),
    ],
)
async def test_category_prefix_filter(
    store: VectorStore, catalog: list[Listing], prefix: str, categories: set[str]
) -> None:
    f = SearchFilters(category_prefix=prefix)
    expected = {i.listing_id for i in catalog if i.category in categories and i.state == "active"}
    hits = await store.search(unit(np.random.default_rng(6), 1).tolist(), 100, f)
    assert set(ids(hits)) == expected
    assert await store.count(f) == len(expected)


@pytest.mark.parametrize(
    ("price_min", "price_max"), [(10.5, None), (None, 20.5), (10.5, 20.5), (30.0, 10.0)]
)
async def test_price_range_filter_is_inclusive(
    store: VectorStore,
    catalog: list[Listing],
    price_min: float | None,
    price_max: float | None,
) -> None:
    f = SearchFilters(price_min=price_min, price_max=price_max)
    expected = {
        i.listing_id
        for i in catalog
        if i.state == "active"
        and (price_min is None or i.price >= price_min)
        and (price_max is None or i.price <= price_max)
    }
    hits = await store.search(unit(np.random.default_rng(7), 1).tolist(), 100, f)
    assert set(ids(hits)) == expected
    assert await store.count(f) == len(expected)


async def test_shop_exclude_and_state_filters(store: VectorStore, catalog: list[Listing]) -> None:
    query = unit(np.random.default_rng(8), 1).tolist()
    active = {i.listing_id for i in catalog if i.state == "active"}

    hits = await store.search(query, 100, SearchFilters(shop_id="S3"))
    assert set(ids(hits)) == {i.listing_id for i in catalog if i.shop_id == "S3"} & active

    excluded = ["L001", "L002", "L003"]
    hits = await store.search(query, 100, SearchFilters(exclude_listing_ids=excluded))
    assert set(ids(hits)) == active - set(excluded)

    # Inactive listings are never results unless asked for; None means the default filters.
    assert set(ids(await store.search(query, 100))) == active
    everything = await store.search(query, 100, SearchFilters(only_active=False))
    assert set(ids(everything)) == {i.listing_id for i in catalog}

    combined = SearchFilters(category_prefix="home", price_max=25.0, shop_id="S1")
    expected = {
        i.listing_id
        for i in catalog
        if i.category.startswith("home/") and i.price <= 25.0 and i.shop_id == "S1"
    } & active
    assert set(ids(await store.search(query, 100, combined))) == expected


async def test_similar_uses_stored_vectors_and_excludes_itself(
    store: VectorStore, catalog: list[Listing]
) -> None:
    rng = np.random.default_rng(9)
    source = next(i for i in catalog if len(i.vectors) == 2 and i.state == "active")
    # A twin whose third photo is another shot of the source's second one.
    twin_vectors = np.vstack([unit(rng, 2), near(source.vectors[1:2], rng, 0.02)])
    twin = Listing("TWIN", twin_vectors, "art/prints", 1.0, "S9")
    await store.upsert_listing(twin.point())

    hits = await store.similar(source.listing_id, 5)
    assert source.listing_id not in ids(hits)
    assert hits[0].listing_id == "TWIN"
    assert hits[0].matched_image_index == 2

    filtered = await store.similar(source.listing_id, 5, SearchFilters(category_prefix="home"))
    assert "TWIN" not in ids(filtered)
    assert source.listing_id not in ids(filtered)

    with pytest.raises(ListingNotFound):
        await store.similar("never-indexed", 5)


async def test_a_batch_of_searches_answers_each_as_its_own_search(
    store: VectorStore, catalog: list[Listing]
) -> None:
    rng = np.random.default_rng(10)
    queries: list[tuple[Matrix, SearchFilters | None]] = [
        (unit(rng, 1), None),
        (unit(rng, 2), SearchFilters(category_prefix="home")),
        (near(catalog[0].vectors[:1], rng), SearchFilters(exclude_listing_ids=["L000"])),
        (unit(rng, 1), SearchFilters(price_max=15.0, shop_id="S1")),
    ]
    batched = await store.search_batch(queries, 4)
    assert len(batched) == len(queries)
    for (vectors, filters), hits in zip(queries, batched, strict=True):
        alone = await store.search(vectors, 4, filters)
        assert ids(hits) == ids(alone)
        assert [h.score for h in hits] == pytest.approx([h.score for h in alone], abs=1e-5)
        assert [h.matched_image_index for h in hits] == [h.matched_image_index for h in alone]
    # min_score holds per query, on the same scale as search's (a cosine, whatever the photos).
    cut_off = batched[1][0].score - 1e-4
    cut = await store.search_batch(queries[1:2] + queries[:1], 4, min_score=cut_off)
    assert ids(cut[0]) == [h.listing_id for h in batched[1] if h.score >= cut_off]
    assert ids(cut[1]) == [h.listing_id for h in batched[0] if h.score >= cut_off]
    assert await store.search_batch([], 4) == []
    assert await store.search_batch(queries[:2], 0) == [[], []]


# -- collections, aliases, persistence -----------------------------------------------------------


async def test_reopening_with_another_dimension_is_refused(backend: Backend) -> None:
    first = backend.open("m1", DIM)
    await first.ensure_collection()
    await first.close()

    other = backend.open("m1", DIM * 2)
    with pytest.raises(DimensionMismatch) as raised:
        await other.ensure_collection()
    assert str(DIM) in str(raised.value)
    assert str(DIM * 2) in str(raised.value)
    await other.close()


async def test_alias_swaps_to_a_new_model_collection(backend: Backend) -> None:
    rng = np.random.default_rng(10)
    old = backend.open("m1", DIM)
    await old.ensure_collection()
    await old.upsert_listing(Listing("OLD", unit(rng, 1), "art/prints", 1.0, "S1").point())
    assert await alias_target(backend) == collection_name_for(ALIAS, "m1")

    new = backend.open("m2", 32)
    await new.ensure_collection()
    assert new.collection_name == "listings__m2"
    await new.upsert_listing(Listing("NEW", unit(rng, 1, 32), "art/prints", 1.0, "S1").point())
    # A second collection does not take the alias until it is told to.
    assert await alias_target(backend) == "listings__m1"

    await new.point_alias_to_self()
    assert await alias_target(backend) == "listings__m2"
    await old.close()
    await new.close()

    if backend.kind == "edge":
        assert await aliased_model_id(backend.settings) == "m2"
    reopened = backend.open("m2", 32)
    await reopened.ensure_collection()
    assert await reopened.vector_size() == 32
    got = await reopened.get("NEW")
    assert got is not None
    assert await reopened.get("OLD") is None
    assert await alias_target(backend) == "listings__m2"
    await reopened.close()


async def test_optimize_keeps_results_and_writes_made_meanwhile(
    backend: Backend, catalog: list[Listing], store: VectorStore
) -> None:
    rng = np.random.default_rng(11)
    query = unit(rng, 1)
    before = await store.search(query.tolist(), 10)

    optimizing = asyncio.create_task(store.optimize())
    await build_started(backend)
    added = Listing("DURING", near(query, rng, 0.01), "art/prints", 3.0, "S1")
    await store.upsert_listing(added.point())
    await store.delete(catalog[2].listing_id)
    await store.set_payload(catalog[3].listing_id, {"title": "during optimize"})
    await optimizing

    after = await store.search(query.tolist(), 11)
    assert after[0].listing_id == "DURING"
    remaining = [i for i in catalog if i.state == "active" and i is not catalog[2]]
    assert ids(after[1:]) == maxsim_order(remaining, query)[:10]
    assert ids(before) == maxsim_order([i for i in catalog if i.state == "active"], query)[:10]
    assert await store.get(catalog[2].listing_id) is None
    third = await store.get(catalog[3].listing_id)
    assert third is not None
    assert third.payload["title"] == "during optimize"
    assert await store.count() == len(catalog)

    await store.optimize()  # again, with nothing left to do
    assert await store.count() == len(catalog)


async def test_factory_memory_stores_share_one_in_process_server() -> None:
    settings = StoreSettings(qdrant_url=":memory:", collection_alias=ALIAS)
    writer = open_store(settings, "m1", DIM)
    reader = open_store(settings, "m1", DIM)
    assert isinstance(writer, ServerStore)
    await writer.ensure_collection()
    await reader.ensure_collection()
    rng = np.random.default_rng(12)
    await writer.upsert_listing(Listing("L1", unit(rng, 1), "art/prints", 1.0, "S1").point())
    assert await reader.get("L1") is not None
    assert await resolve_alias(settings) == "listings__m1"
    assert await aliased_model_id(settings) == "m1"
    await writer.close()
    await reader.close()

    fresh = open_store(settings, "m1", DIM)
    await fresh.ensure_collection()
    assert await fresh.count() == 0
    await fresh.close()


def test_collection_names_carry_the_model_id() -> None:
    assert collection_name_for("listings", "efficientnet-lite0-1a2b3c4d") == (
        "listings__efficientnet-lite0-1a2b3c4d"
    )
    for bad in ("../x", "a/b", "", "m 1"):
        with pytest.raises(ValueError):
            collection_name_for("listings", bad)


# -- Qdrant Edge only: its files are ours to look after ------------------------------------------


def edge_settings(tmp_path: Path) -> StoreSettings:
    return StoreSettings(index_path=tmp_path / "index", collection_alias=ALIAS)


async def test_edge_data_persists_across_close_and_reopen(tmp_path: Path) -> None:
    settings = edge_settings(tmp_path)
    items = make_catalog(n=12)
    store = open_store(settings, "m1", DIM)
    assert isinstance(store, EdgeStore)
    await store.ensure_collection()
    for item in items:
        await store.upsert_listing(item.point())
    await store.set_payload("L001", {"title": "kept"})
    await store.delete("L002")
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.count()

    assert (tmp_path / "index" / "listings__m1" / "edge_config.json").exists()
    aliases = json.loads((tmp_path / "index" / "aliases.json").read_text())
    assert aliases == {"listings": "listings__m1"}

    reopened = open_store(settings, "m1", DIM)
    await reopened.ensure_collection()
    assert await reopened.count() == len(items) - 1
    kept = await reopened.get("L001", with_vectors=True)
    assert kept is not None
    assert kept.payload["title"] == "kept"
    np.testing.assert_allclose(np.array(kept.vectors), items[1].vectors, atol=1e-5)
    hits = await reopened.search(items[4].vectors.tolist(), 1, SearchFilters(only_active=False))
    assert ids(hits) == ["L004"]
    await reopened.close()


async def test_edge_indexes_version_fields_also_in_an_older_collection(tmp_path: Path) -> None:
    settings = edge_settings(tmp_path)
    store = open_store(settings, "m1", DIM)
    await store.ensure_collection()
    await store.close()
    path = str(tmp_path / "index" / "listings__m1")
    new_fields = {"version", "tombstone", "tombstoned_at"}
    shard = qe.EdgeShard.load(path)
    assert set(PAYLOAD_INDEXES) <= set(shard.info().payload_schema)
    # A collection made before versions lived in the store: its indexes are added on open.
    for name in new_fields:
        shard.update(qe.UpdateOperation.delete_field_index(name))
    assert not new_fields & set(shard.info().payload_schema)
    shard.close()

    reopened = open_store(settings, "m1", DIM)
    await reopened.ensure_collection()
    await reopened.close()
    shard = qe.EdgeShard.load(path)
    try:
        assert set(PAYLOAD_INDEXES) <= set(shard.info().payload_schema)
    finally:
        shard.close()


async def test_edge_refuses_a_second_opener_of_one_shard(tmp_path: Path) -> None:
    settings = edge_settings(tmp_path)
    first = open_store(settings, "m1", DIM)
    await first.ensure_collection()
    second = open_store(settings, "m1", DIM)
    with pytest.raises(StoreError, match="another store or process"):
        await second.ensure_collection()
    await second.close()
    await first.close()


@pytest.mark.slow
async def test_edge_optimize_survives_reopen_and_leaves_no_copies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="models.store.edge")
    settings = edge_settings(tmp_path)
    items = make_catalog(n=20)
    store = open_store(settings, "m1", DIM)
    await store.ensure_collection()
    for item in items:
        await store.upsert_listing(item.point())
    optimizing = asyncio.create_task(store.optimize())
    await appears(tmp_path / "index" / ".listings__m1.optimizing")
    await store.upsert_listing(
        Listing("LATE", unit(np.random.default_rng(13), 2), "a", 1, "S").point()
    )
    await store.delete(items[0].listing_id)
    await optimizing
    await store.close()
    # The writes landed while the copy was being built, so they reached it through the journal.
    assert "2 writes replayed" in caplog.text

    index = tmp_path / "index"
    assert sorted(p.name for p in index.iterdir() if p.is_dir()) == ["listings__m1"]
    reopened = open_store(settings, "m1", DIM)
    await reopened.ensure_collection()
    assert await reopened.count() == len(items)
    assert await reopened.get("LATE") is not None
    assert await reopened.get(items[0].listing_id) is None
    await reopened.close()


@pytest.mark.slow
async def test_edge_close_during_optimize_discards_the_copy(tmp_path: Path) -> None:
    settings = edge_settings(tmp_path)
    store = open_store(settings, "m1", DIM)
    await store.ensure_collection()
    for item in make_catalog(n=10):
        await store.upsert_listing(item.point())
    optimizing = asyncio.create_task(store.optimize())
    await appears(tmp_path / "index" / ".listings__m1.optimizing")
    await store.close()
    with pytest.raises(StoreError):
        await optimizing

    index = tmp_path / "index"
    assert sorted(p.name for p in index.iterdir() if p.is_dir()) == ["listings__m1"]
    reopened = open_store(settings, "m1", DIM)
    await reopened.ensure_collection()
    assert await reopened.count() == 10
    await reopened.close()


@pytest.mark.slow
async def test_edge_optimize_builds_an_index_and_search_stays_exact(tmp_path: Path) -> None:
    # A tiny indexing threshold makes this small collection worth an HNSW graph.
    store = EdgeStore(tmp_path / "index", ALIAS, "listings__m1", DIM, indexing_threshold_kb=1)
    await store.ensure_collection()
    items = make_catalog(seed=21, n=300)
    for item in items:
        await store.upsert_listing(item.point())
    assert (await store.stats())["indexed_vectors"] == 0
    rng = np.random.default_rng(22)
    queries = [unit(rng, 1) for _ in range(5)]

    await store.optimize()

    stats = await store.stats()
    assert stats["points"] == len(items)
    assert stats["indexed_vectors"] > 0
    active = [i for i in items if i.state == "active"]
    for query in queries:
        hits = await store.search(query.tolist(), 5)
        assert ids(hits) == maxsim_order(active, query)[:5]
    target = active[17]
    hits = await store.search(near(target.vectors[-1:], rng).tolist(), 1)
    assert ids(hits) == [target.listing_id]
    assert hits[0].matched_image_index == len(target.vectors) - 1
    await store.close()


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["log moved to the copy", "copy in place"])
async def test_edge_recovers_from_a_swap_interrupted_by_a_crash(tmp_path: Path, stage: str) -> None:
    settings = edge_settings(tmp_path)
    store = open_store(settings, "m1", DIM)
    await store.ensure_collection()
    for item in make_catalog(n=6):
        await store.upsert_listing(item.point())
    await store.close()
    # Replay the swap's file moves by hand, and stop where a crash could stop them.
    index = tmp_path / "index"
    live, work, retired = (
        index / "listings__m1",
        index / ".listings__m1.optimizing",
        index / ".listings__m1.retired",
    )
    shutil.copytree(live, work, ignore=lambda d, names: ["wal"] if Path(d) == live else [])
    live.rename(retired)
    (retired / "wal").rename(work / "wal")
    if stage == "copy in place":
        work.rename(live)

    recovered = open_store(settings, "m1", DIM)
    await recovered.ensure_collection()
    assert await recovered.count() == 6
    await recovered.upsert_listing(
        Listing("AFTER", unit(np.random.default_rng(14), 1), "a", 1, "S").point()
    )
    await recovered.close()
    assert sorted(p.name for p in index.iterdir() if p.is_dir()) == ["listings__m1"]

    reopened = open_store(settings, "m1", DIM)
    await reopened.ensure_collection()
    assert await reopened.count() == 7
    assert await reopened.get("AFTER") is not None
    await reopened.close()
