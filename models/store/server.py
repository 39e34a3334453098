"""Qdrant server backend through AsyncQdrantClient (also qdrant-client's local mode, for tests)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

from qdrant_client import AsyncQdrantClient
from qdrant_client import models as qm

from models.payload import IndexKind, TombstonePayload
from models.store.filters import (
    GRAPH_INDEXED,
    PAYLOAD_INDEXES,
    Conditions,
    conditions,
    server_batch_write_condition,
    server_filter,
    server_old_tombstones,
    server_payload_target,
    server_write_condition,
)
from models.store.layout import StoreLayout
from models.store.maxsim import (
    Matrix,
    as_matrix,
)
from models.store.querying import (
    QueryingStore,
    check_listing_payload,
    checked_batch,
    hits,
    placeholder_vector,
    stored_listing,
)
from models.store.types import (
    CollectionInfo,
    Collections,
    DimensionMismatch,
    Hit,
    ListingPoint,
    SearchFilters,
    StoredListing,
    StoreError,
    alias_model_id,
    payload_version,
    point_id,
)

log = logging.getLogger(__name__)


def _server_index_params(
    kind: IndexKind, graph: bool, on_disk: bool
) -> qm.KeywordIndexParams | qm.IntegerIndexParams | qm.FloatIndexParams | qm.BoolIndexParams:
    """models.store.edge's _edge_index_params for qdrant-client."""
    options: dict[str, Any] = {"enable_hnsw": graph, "on_disk": on_disk}
    if kind == "keyword":
        return qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, **options)
    if kind == "integer":
        return qm.IntegerIndexParams(type=qm.IntegerIndexType.INTEGER, **options)
    if kind == "float":
        return qm.FloatIndexParams(type=qm.FloatIndexType.FLOAT, **options)
    return qm.BoolIndexParams(type=qm.BoolIndexType.BOOL, **options)


# How often optimize() looks at the collection's status while the server builds indexes.
OPTIMIZE_POLL_S = 0.5


def _server_quantization(
    layout: StoreLayout,
) -> qm.ScalarQuantization | qm.BinaryQuantization | None:
    # Compressed vectors stay in RAM whatever on_disk says: they are what a search traverses.
    if layout.quantization == "int8":
        return qm.ScalarQuantization(
            scalar=qm.ScalarQuantizationConfig(
                type=qm.ScalarType.INT8, quantile=0.99, always_ram=True
            )
        )
    if layout.quantization == "binary":
        return qm.BinaryQuantization(binary=qm.BinaryQuantizationConfig(always_ram=True))
    return None


def _server_search_params(layout: StoreLayout) -> qm.SearchParams | None:
    if layout.default_search:
        return None
    quantization = None
    if layout.quantized:
        quantization = qm.QuantizationSearchParams(rescore=True, oversampling=layout.oversampling)
    return qm.SearchParams(
        hnsw_ef=layout.hnsw_ef,
        quantization=quantization,
        acorn=qm.AcornSearchParams(enable=True) if layout.acorn else None,
    )


class ServerStore(QueryingStore):
    """A collection on a Qdrant server, read by everyone through a real alias.

    The client is given, not created: the factory shares one local-mode client between the stores
    of a process, as a server would be shared. `release` is awaited on close (default: close the
    client). `local_mode` only silences qdrant-client's warning that local mode ignores indexes.
    """

    def __init__(
        self,
        client: AsyncQdrantClient,
        alias: str,
        collection_name: str,
        dim: int,
        *,
        release: Callable[[], Awaitable[None]] | None = None,
        local_mode: bool = False,
        layout: StoreLayout | None = None,
    ) -> None:
        if dim < 1:
            raise ValueError(f"vector size must be positive, got {dim}")
        self._client = client
        self._alias = alias
        self._name = collection_name
        self._dim = dim
        self._release = release if release is not None else client.close
        self._local_mode = local_mode
        self._layout = layout or StoreLayout()
        self._search_params = _server_search_params(self._layout)
        self._closed = False

    @property
    def collection_name(self) -> str:
        return self._name

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        if self._closed:
            raise StoreError(f"store {self._name!r} is closed")
        try:
            yield
        except StoreError:
            raise
        except Exception as e:
            # Transport, HTTP and local-mode errors alike: callers catch one type.
            raise StoreError(f"qdrant {what} on {self._name!r} failed: {e}") from e

    def _mismatch(self, stored: int) -> DimensionMismatch:
        return DimensionMismatch(
            f"collection {self._name!r} stores {stored}-dimensional vectors, but the model "
            f"produces {self._dim}-dimensional embeddings; a model with another embedding size "
            f"needs its own collection"
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def ensure_collection(self) -> None:
        with self._errors("ensure_collection"):
            if await self._client.collection_exists(self._name):
                stored = await self.vector_size()
                if stored != self._dim:
                    raise self._mismatch(stored)
            else:
                await self._create()
            await self._ensure_indexes()
            current = await self.alias_target()
            if current is None:
                await self._point_alias(current)
                current = self._name
        log.info("qdrant collection %s ready (alias %s -> %s)", self._name, self._alias, current)

    async def _create(self) -> None:
        try:
            layout = self._layout
            await self._client.create_collection(
                self._name,
                vectors_config=qm.VectorParams(
                    size=self._dim,
                    distance=qm.Distance.COSINE,
                    on_disk=layout.on_disk,
                    multivector_config=qm.MultiVectorConfig(
                        comparator=qm.MultiVectorComparator.MAX_SIM
                    ),
                ),
                quantization_config=_server_quantization(layout),
                on_disk_payload=layout.on_disk,
                shard_number=layout.shard_number,
                replication_factor=layout.replication_factor,
                write_consistency_factor=layout.write_consistency_factor,
            )
        except Exception:
            # Another process may have created it first; anything else is a real failure.
            if not await self._client.collection_exists(self._name):
                raise
            stored = await self.vector_size()
            if stored != self._dim:
                raise self._mismatch(stored) from None

    async def _ensure_indexes(self) -> None:
        info = await self._client.get_collection(self._name)
        present = info.payload_schema or {}
        with warnings.catch_warnings():
            if self._local_mode:
                warnings.filterwarnings("ignore", "Payload indexes have no effect")
            for field, kind in PAYLOAD_INDEXES.items():
                if field not in present:
                    await self._client.create_payload_index(
                        collection_name=self._name,
                        field_name=field,
                        field_schema=_server_index_params(
                            kind, field in GRAPH_INDEXED, self._layout.on_disk
                        ),
                        wait=True,
                    )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._release()

    # -- writes -----------------------------------------------------------------------------

    async def _upsert(self, listing_id: str, vectors: Any, payload: dict[str, Any]) -> None:
        version = payload_version(payload)
        point = qm.PointStruct(
            id=point_id(listing_id), vector=vectors, payload={**payload, "listing_id": listing_id}
        )
        with self._errors("upsert"):
            await self._client.upsert(
                self._name,
                points=[point],
                update_filter=None if version is None else server_write_condition(version),
                wait=True,
            )

    async def upsert_listing(self, point: ListingPoint) -> None:
        m = as_matrix(point.vectors, self._dim, f"listing {point.listing_id!r}")
        check_listing_payload(point.listing_id, point.payload)
        await self._upsert(point.listing_id, m.tolist(), point.payload)

    async def upsert_listings(self, points: Sequence[ListingPoint]) -> None:
        batch, versions = checked_batch(points, self._dim)
        if not batch:
            return
        structs = [
            qm.PointStruct(id=point_id(lid), vector=vectors, payload=payload)
            for lid, vectors, payload in batch
        ]
        with self._errors("upsert"):
            await self._client.upsert(
                self._name,
                points=structs,
                update_filter=server_batch_write_condition(versions),
                wait=True,
            )

    async def set_payload(self, listing_id: str, payload: dict[str, Any]) -> None:
        check_listing_payload(listing_id, payload)
        if not payload:
            return
        target = server_payload_target(listing_id, payload_version(payload))
        with self._errors("set_payload"):
            await self._client.set_payload(
                self._name, payload=payload, points=qm.FilterSelector(filter=target), wait=True
            )

    async def tombstone(self, listing_id: str, version: int, state: str) -> None:
        payload = TombstonePayload(listing_id=listing_id, version=version, state=state)
        await self._upsert(listing_id, placeholder_vector(self._dim), payload.to_store())

    async def purge_tombstones(self, older_than: float) -> int:
        old = server_old_tombstones(older_than)
        with self._errors("purge_tombstones"):
            found = (await self._client.count(self._name, count_filter=old, exact=True)).count
            if found:
                await self._client.delete(
                    self._name, points_selector=qm.FilterSelector(filter=old), wait=True
                )
        return found

    async def delete(self, listing_id: str) -> None:
        with self._errors("delete"):
            await self._client.delete(
                self._name,
                points_selector=qm.PointIdsList(points=[point_id(listing_id)]),
                wait=True,
            )

    # -- reads ------------------------------------------------------------------------------

    async def get(self, listing_id: str, with_vectors: bool = False) -> StoredListing | None:
        with self._errors("retrieve"):
            records = await self._client.retrieve(
                self._name, ids=[point_id(listing_id)], with_payload=True, with_vectors=with_vectors
            )
        return stored_listing(records[0], with_vectors) if records else None

    async def _nearest(
        self, query: Matrix, k: int, where: Conditions, offset: int, threshold: float | None
    ) -> list[Hit]:
        with self._errors("query"):
            response = await self._client.query_points(
                self._name,
                query=query.tolist(),
                query_filter=server_filter(where),
                limit=k,
                offset=offset,
                score_threshold=threshold,
                with_payload=True,
                with_vectors=True,
                search_params=self._search_params,
            )
        return hits(response.points, query)

    async def _nearest_batch(
        self, queries: Sequence[tuple[Matrix, Conditions]], k: int, thresholds: list[float | None]
    ) -> list[list[Hit]]:
        requests = [
            qm.QueryRequest(
                query=query.tolist(),
                filter=server_filter(where),
                limit=k,
                score_threshold=threshold,
                with_payload=True,
                with_vector=True,
                params=self._search_params,
            )
            for (query, where), threshold in zip(queries, thresholds, strict=True)
        ]
        with self._errors("query"):
            responses = await self._client.query_batch_points(self._name, requests=requests)
        return [
            hits(response.points, query)
            for response, (query, _) in zip(responses, queries, strict=True)
        ]

    async def facet(
        self, key: str, filters: SearchFilters | None = None, limit: int = 1000
    ) -> dict[str, int]:
        with self._errors("facet"):
            response = await self._client.facet(
                self._name,
                key,
                facet_filter=server_filter(conditions(filters)),
                limit=limit,
                exact=True,
            )
        return {str(hit.value): int(hit.count) for hit in response.hits}

    async def count(self, filters: SearchFilters | None = None) -> int:
        with self._errors("count"):
            result = await self._client.count(
                self._name, count_filter=server_filter(conditions(filters)), exact=True
            )
        return result.count

    async def scroll(
        self, with_vectors: bool = False, page_size: int = 256, include_tombstones: bool = False
    ) -> AsyncIterator[StoredListing]:
        where = server_filter(Conditions(tombstones=include_tombstones))
        offset: qm.ExtendedPointId | None = None
        while True:
            with self._errors("scroll"):
                records, next_offset = await self._client.scroll(
                    self._name,
                    scroll_filter=where,
                    limit=page_size,
                    offset=offset,
                    with_payload=True,
                    with_vectors=with_vectors,
                )
            for record in records:
                yield stored_listing(record, with_vectors)
            if next_offset is None:
                return
            offset = next_offset

    async def vector_size(self) -> int:
        with self._errors("get_collection"):
            info = await self._client.get_collection(self._name)
        vectors = info.config.params.vectors
        if isinstance(vectors, dict):
            vectors = vectors.get("")
        if not isinstance(vectors, qm.VectorParams):
            raise StoreError(f"collection {self._name!r} has no unnamed dense vector")
        return vectors.size

    # -- aliases ----------------------------------------------------------------------------

    async def alias_target(self) -> str | None:
        """The collection the alias points at now, or None."""
        with self._errors("get_aliases"):
            response = await self._client.get_aliases()
        for alias in response.aliases:
            if alias.alias_name == self._alias:
                return alias.collection_name
        return None

    async def _point_alias(self, current: str | None) -> None:
        ops: list[qm.AliasOperations] = []
        if current is not None:
            ops.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=self._alias)))
        ops.append(
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(collection_name=self._name, alias_name=self._alias)
            )
        )
        # One request: readers see the old target or the new one, never no alias.
        await self._client.update_collection_aliases(change_aliases_operations=ops)

    async def point_alias_to_self(self) -> None:
        with self._errors("update_collection_aliases"):
            if not await self._client.collection_exists(self._name):
                raise StoreError(
                    f"collection {self._name!r} does not exist: ensure_collection() first"
                )
            await self._point_alias(await self.alias_target())
        log.info("alias %s -> %s", self._alias, self._name)

    # -- optimize ---------------------------------------------------------------------------

    async def optimize(self) -> None:
        """Wait until the server has built its indexes (it optimizes by itself)."""
        while True:
            with self._errors("get_collection"):
                info = await self._client.get_collection(self._name)
                if info.status == qm.CollectionStatus.GREEN:
                    return
                if info.status == qm.CollectionStatus.RED:
                    raise StoreError(f"collection {self._name!r} is red: optimization failed")
                if info.status == qm.CollectionStatus.GREY:
                    # Grey: optimizations are pending but were never triggered (after a restart).
                    await self._client.update_collection(
                        self._name, optimizers_config=qm.OptimizersConfigDiff()
                    )
            await asyncio.sleep(OPTIMIZE_POLL_S)


class ServerCollections(Collections):
    """The alias's collections on a Qdrant server, through its real alias."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        alias: str,
        *,
        release: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._alias = alias
        self._release = release if release is not None else client.close

    def _store(self, name: str) -> ServerStore:
        # Only for its reads and its one-request alias swap; never closed (the client is ours).
        return ServerStore(self._client, self._alias, name, 1, release=_nothing)

    async def alias_target(self) -> str | None:
        return await self._store(self._alias).alias_target()

    async def list(self) -> list[CollectionInfo]:
        try:
            response = await self._client.get_collections()
        except Exception as e:
            raise StoreError(f"qdrant get_collections failed: {e}") from e
        found: list[CollectionInfo] = []
        for name in sorted(c.name for c in response.collections):
            model_id = alias_model_id(self._alias, name)
            if model_id is None:
                continue
            store = self._store(name)
            try:
                found.append(
                    CollectionInfo(name, model_id, await store.count(), await store.vector_size())
                )
            except StoreError as e:
                found.append(CollectionInfo(name, model_id, None, None, str(e)))
        return found

    async def point_alias(self, collection: str) -> None:
        await self._store(collection).point_alias_to_self()

    async def close(self) -> None:
        await self._release()


async def _nothing() -> None:
    return None
