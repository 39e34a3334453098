"""Quantization and the collection layout reach both backends, and search stays right."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import AsyncQdrantClient

from models.settings import StoreSettings
from models.store.edge import EDGE_CONFIG_FILE, EdgeStore
from models.store.factory import open_store
from models.store.filters import PAYLOAD_INDEXES
from models.store.layout import StoreLayout
from models.store.server import ServerStore
from tests.integration.test_store import ALIAS, DIM, ids, make_catalog, maxsim_order, unit

pytestmark = pytest.mark.slow


async def _top10_overlap_with_exact(store: EdgeStore, seed: int) -> list[float]:
    """Write and optimize a 300-listing catalog, then for 10 random queries the share of the
    exact MaxSim top 10 that the store's search finds."""
    items = make_catalog(seed=seed, n=300)
    for item in items:
        await store.upsert_listing(item.point())
    await store.optimize()
    active = [i for i in items if i.state == "active"]
    rng = np.random.default_rng(seed + 1)
    overlap = []
    for _ in range(10):
        query = unit(rng, 1)
        exact = maxsim_order(active, query)[:10]
        got = ids(await store.search(query.tolist(), 10))
        overlap.append(len(set(got) & set(exact)) / 10)
    return overlap


# Binary quantization keeps one bit a dimension: on these 64-d random vectors (real embeddings
# have 256 or 1280) even rescoring 4 x k candidates finds only part of the exact top 10.
@pytest.mark.parametrize(("quantization", "min_overlap"), [("int8", 0.9), ("binary", 0.5)])
async def test_edge_searches_quantized_vectors_and_rescores_with_the_originals(
    tmp_path: Path, quantization: str, min_overlap: float
) -> None:
    layout = StoreLayout(quantization=quantization, on_disk=True, oversampling=4.0)  # type: ignore[arg-type]
    store = EdgeStore(
        tmp_path / "index", ALIAS, "listings__m1", DIM, indexing_threshold_kb=1, layout=layout
    )
    await store.ensure_collection()
    try:
        config = json.loads((store.shard_path / EDGE_CONFIG_FILE).read_text())
        vectors = config["vectors"][""]
        assert vectors["on_disk"] is True and config["on_disk_payload"] is True
        assert set(vectors["quantization_config"]) == {
            "scalar" if quantization == "int8" else "binary"
        }
        overlap = await _top10_overlap_with_exact(store, seed=31)
        assert (await store.stats())["indexed_vectors"] > 0
        assert np.mean(overlap) >= min_overlap, overlap
    finally:
        await store.close()
    # A reopened store keeps the layout on disk.
    reopened = open_store(
        StoreSettings(index_path=tmp_path / "index", quantization=quantization, store_on_disk=True),
        "m1",
        DIM,
    )
    await reopened.ensure_collection()
    assert await reopened.count() > 0
    await reopened.close()


async def test_edge_takes_the_search_time_settings_and_still_finds_the_exact_top(
    tmp_path: Path,
) -> None:
    layout = StoreLayout(hnsw_ef=200, acorn=True)
    store = EdgeStore(
        tmp_path / "index", ALIAS, "listings__m1", DIM, indexing_threshold_kb=1, layout=layout
    )
    await store.ensure_collection()
    try:
        overlap = await _top10_overlap_with_exact(store, seed=35)
        assert np.mean(overlap) >= 0.9, overlap
    finally:
        await store.close()


class RecordingClient(AsyncQdrantClient):
    """qdrant-client's local mode, recording what a server would have been asked (no Qdrant
    server runs here, and local mode ignores quantization, shards and replicas)."""

    calls: dict[str, list[dict[str, Any]]]

    async def create_collection(self, *args: Any, **kwargs: Any) -> bool:
        self.calls.setdefault("create_collection", []).append(kwargs)
        return await super().create_collection(*args, **kwargs)

    async def query_points(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.setdefault("query_points", []).append(kwargs)
        return await super().query_points(*args, **kwargs)

    async def create_payload_index(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.setdefault("create_payload_index", []).append(kwargs)
        return await super().create_payload_index(*args, **kwargs)


async def test_the_server_collection_is_created_with_the_layout_and_searched_with_rescoring() -> (
    None
):
    client = RecordingClient(location=":memory:")
    client.calls = {}
    settings = StoreSettings(
        qdrant_url=":memory:",
        quantization="int8",
        quantization_oversampling=3.0,
        hnsw_ef=256,
        acorn=True,
        store_on_disk=True,
        shard_number=6,
        replication_factor=2,
        write_consistency_factor=2,
    )
    store = ServerStore(
        client,
        ALIAS,
        "listings__m1",
        DIM,
        local_mode=True,
        layout=StoreLayout.from_settings(settings),
    )
    await store.ensure_collection()
    try:
        created = client.calls["create_collection"][0]
        assert created["shard_number"] == 6
        assert created["replication_factor"] == 2
        assert created["write_consistency_factor"] == 2
        assert created["on_disk_payload"] is True and created["vectors_config"].on_disk is True
        scalar = created["quantization_config"].scalar
        assert scalar.type.value == "int8" and scalar.always_ram is True
        items = make_catalog(seed=33, n=40)
        for item in items:
            await store.upsert_listing(item.point())
        active = [i for i in items if i.state == "active"]
        query = unit(np.random.default_rng(34), 1)
        got = ids(await store.search(query.tolist(), 5))
        assert got == maxsim_order(active, query)[:5]
        params = client.calls["query_points"][-1]["search_params"]
        assert params.quantization.rescore is True and params.quantization.oversampling == 3.0
        assert params.hnsw_ef == 256 and params.acorn.enable is True
    finally:
        await store.close()


# Searches filter by category, price and shop: only those fields' values get HNSW links of their
# own; ids, versions, tombstones, state and currency are looked up or match nearly every listing.
GRAPH_LINKED = {"category_path", "price", "shop_id"}


@pytest.mark.parametrize("on_disk", [False, True])
async def test_edge_links_only_the_search_filter_fields_in_the_graph(
    tmp_path: Path, on_disk: bool
) -> None:
    layout = StoreLayout(on_disk=on_disk)
    store = EdgeStore(tmp_path / "index", ALIAS, "listings__m1", DIM, layout=layout)
    await store.ensure_collection()
    await store.close()
    shard = qe.EdgeShard.load(str(tmp_path / "index" / "listings__m1"))
    try:
        schema = {name: index.params for name, index in shard.info().payload_schema.items()}
    finally:
        shard.close()
    assert set(schema) == set(PAYLOAD_INDEXES)
    enabled = {name: getattr(params, "enable_hnsw", None) for name, params in schema.items()}
    assert {name for name, on in enabled.items() if on} == GRAPH_LINKED
    assert all(on is False for name, on in enabled.items() if name not in GRAPH_LINKED)
    # The payload indexes live where the layout keeps the payload.
    assert {getattr(params, "on_disk", None) for params in schema.values()} == {on_disk}


async def test_the_server_links_only_the_search_filter_fields_in_the_graph() -> None:
    client = RecordingClient(location=":memory:")
    client.calls = {}
    layout = StoreLayout(on_disk=True)
    store = ServerStore(client, ALIAS, "listings__m1", DIM, local_mode=True, layout=layout)
    await store.ensure_collection()
    await store.close()
    created = {c["field_name"]: c["field_schema"] for c in client.calls["create_payload_index"]}
    assert set(created) == set(PAYLOAD_INDEXES)
    assert {name for name, schema in created.items() if schema.enable_hnsw} == GRAPH_LINKED
    assert {name: schema.type.value for name, schema in created.items()} == PAYLOAD_INDEXES
    assert {schema.on_disk for schema in created.values()} == {True}
