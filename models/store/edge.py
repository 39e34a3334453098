"""Qdrant Edge backend: one on-disk EdgeShard per collection, inside this process."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import qdrant_edge as qe

from models.payload import IndexKind, TombstonePayload
from models.store.aliases import AliasFile
from models.store.filters import (
    GRAPH_INDEXED,
    PAYLOAD_INDEXES,
    Conditions,
    conditions,
    edge_batch_write_condition,
    edge_filter,
    edge_old_tombstones,
    edge_payload_target,
    edge_write_condition,
)
from models.store.layout import StoreLayout
from models.store.maxsim import (
    Matrix,
    as_matrix,
)
from models.store.querying import (
    BatchPoint,
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

T = TypeVar("T")

# Written by Edge next to its segments; the only place an unopened shard states its vector size.
EDGE_CONFIG_FILE = "edge_config.json"
WAL_DIR = "wal"
OPTIMIZER_MODULE = "models.store.edge_optimize"


def stored_vector_size(shard_path: Path) -> int | None:
    """The vector size a shard on disk was created with; None if there is no readable shard."""
    try:
        config = json.loads((shard_path / EDGE_CONFIG_FILE).read_text(encoding="utf-8"))
        size = config["vectors"][""]["size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return size if isinstance(size, int) else None


def _edge_index_params(
    kind: IndexKind, graph: bool, on_disk: bool
) -> qe.KeywordIndexParams | qe.IntegerIndexParams | qe.FloatIndexParams | qe.BoolIndexParams:
    """A payload index: HNSW links of its own only for a graph field (models.payload.indexed),
    memory-mapped from disk when the layout keeps the payload there."""
    if kind == "keyword":
        return qe.KeywordIndexParams(enable_hnsw=graph, on_disk=on_disk)
    if kind == "integer":
        return qe.IntegerIndexParams(enable_hnsw=graph, on_disk=on_disk)
    if kind == "float":
        return qe.FloatIndexParams(enable_hnsw=graph, on_disk=on_disk)
    return qe.BoolIndexParams(enable_hnsw=graph, on_disk=on_disk)


def copy_shard(index_path: Path, collection_name: str, into: Path) -> Path:
    """A copy of a collection's files (segments and write-ahead log) under `into`, to read while
    another process holds the collection open: Edge locks an open shard, it does not share it."""
    target = into / collection_name
    shutil.copytree(index_path / collection_name, target, symlinks=True)
    return target


def _edge_quantization(
    layout: StoreLayout,
) -> qe.ScalarQuantizationConfig | qe.BinaryQuantizationConfig | None:
    # Compressed vectors stay in RAM whatever on_disk says: they are what a search traverses.
    if layout.quantization == "int8":
        return qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, always_ram=True)
    if layout.quantization == "binary":
        return qe.BinaryQuantizationConfig(always_ram=True)
    return None


def _edge_config(
    dim: int, indexing_threshold_kb: int | None = None, layout: StoreLayout | None = None
) -> qe.EdgeConfig:
    layout = layout or StoreLayout()
    optimizers = None
    if indexing_threshold_kb is not None:
        optimizers = qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb)
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(
            size=dim,
            distance=qe.Distance.Cosine,
            on_disk=layout.on_disk,
            multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
            quantization_config=_edge_quantization(layout),
        ),
        on_disk_payload=layout.on_disk,
        optimizers=optimizers,
    )


def _edge_search_params(layout: StoreLayout) -> qe.SearchParams | None:
    if layout.default_search:
        return None
    quantization = None
    if layout.quantized:
        quantization = qe.QuantizationSearchParams(rescore=True, oversampling=layout.oversampling)
    return qe.SearchParams(
        hnsw_ef=layout.hnsw_ef,
        quantization=quantization,
        acorn=qe.AcornSearchParams(enable=True) if layout.acorn else None,
    )


class EdgeStore(QueryingStore):
    """A collection stored as an EdgeShard at <index_path>/<collection_name>/.

    Every Edge call runs on one dedicated thread, in submission order, so a write is visible to
    the next read. Edge keeps the GIL for the whole of each call: a thread frees the event loop
    only between calls. Calls are milliseconds, except optimize(), which therefore builds its
    indexes in a child process on a copy of the shard while this one keeps serving.
    """

    def __init__(
        self,
        index_path: Path,
        alias: str,
        collection_name: str,
        dim: int,
        *,
        indexing_threshold_kb: int | None = None,
        layout: StoreLayout | None = None,
    ) -> None:
        """indexing_threshold_kb: segments smaller than this are scanned, not indexed (Edge's
        default when None); tests lower it to make optimize() build a real HNSW graph. `layout`
        (quantization, on disk) applies when the shard is created or next loaded, except to
        payload indexes, which keep the settings they were created with."""
        if dim < 1:
            raise ValueError(f"vector size must be positive, got {dim}")
        self._root = Path(index_path)
        self._alias = alias
        self._name = collection_name
        self._dim = dim
        self._indexing_threshold_kb = indexing_threshold_kb
        self._layout = layout or StoreLayout()
        self._search_params = _edge_search_params(self._layout)
        self._aliases = AliasFile(self._root)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdrant-edge")
        self._shard: qe.EdgeShard | None = None
        # Writes applied while a copy is being optimized, replayed onto the copy before the swap.
        self._journal: list[qe.UpdateOperation] | None = None
        self._optimizing = asyncio.Lock()
        # Held by every write, and by optimize() while it copies the shard's files.
        self._write_gate = asyncio.Lock()
        self._optimizer: asyncio.subprocess.Process | None = None
        self._closed = False

    @property
    def collection_name(self) -> str:
        return self._name

    @property
    def shard_path(self) -> Path:
        return self._root / self._name

    def _sibling(self, state: str) -> Path:
        return self._root / f".{self._name}.{state}"

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any, when_closed: bool = False) -> T:
        if self._closed and not when_closed:
            raise StoreError(f"store {self._name!r} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except (StoreError, ValueError):
            raise
        except Exception as e:
            # Edge raises bare Exception; callers catch one type for every engine failure.
            raise StoreError(f"qdrant edge ({self._name}): {e}") from e

    def _require(self) -> qe.EdgeShard:
        if self._shard is None:
            raise StoreError(f"collection {self._name!r} is not open: call ensure_collection()")
        return self._shard

    def _config(self) -> qe.EdgeConfig:
        return _edge_config(self._dim, self._indexing_threshold_kb, self._layout)

    def _mismatch(self, stored: int | None, detail: str = "") -> DimensionMismatch:
        size = "vectors of another size" if stored is None else f"{stored}-dimensional vectors"
        return DimensionMismatch(
            f"collection {self._name!r} at {self.shard_path} stores {size}, "
            f"but the model produces {self._dim}-dimensional embeddings; a model with another "
            f"embedding size needs its own collection{detail}"
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def ensure_collection(self) -> None:
        await self._run(self._open_shard)
        current = await self._run(self._aliases.set_if_absent, self._alias, self._name)
        log.info(
            "edge collection %s open at %s (alias %s -> %s)",
            self._name,
            self.shard_path,
            self._alias,
            current,
        )

    def _open_shard(self) -> None:
        if self._shard is not None:
            return
        self._recover_interrupted_swap()
        path = self.shard_path
        if (path / EDGE_CONFIG_FILE).exists():
            stored = stored_vector_size(path)
            if stored is not None and stored != self._dim:
                raise self._mismatch(stored)
            try:
                shard = qe.EdgeShard.load(str(path), self._config())
            except Exception as e:
                if "vector size" in str(e):
                    raise self._mismatch(stored, f" ({e})") from e
                hint = (
                    " (is it open in another store or process?)" if "WouldBlock" in str(e) else ""
                )
                raise StoreError(f"cannot open Edge shard {path}: {e}{hint}") from e
        else:
            path.mkdir(parents=True, exist_ok=True)
            shard = qe.EdgeShard.create(str(path), self._config())
        try:
            present = shard.info().payload_schema
            on_disk = self._layout.on_disk
            for field, kind in PAYLOAD_INDEXES.items():
                if field not in present:
                    params = _edge_index_params(kind, field in GRAPH_INDEXED, on_disk)
                    shard.update(qe.UpdateOperation.create_field_index(field, params))
        except BaseException:
            shard.close()
            raise
        self._shard = shard

    def _recover_interrupted_swap(self) -> None:
        retired, work = self._sibling("retired"), self._sibling("optimizing")
        if retired.exists():
            # The swap stopped before the optimized copy held every write; the retired shard
            # does, once its write-ahead log is back from wherever the swap had moved it.
            copy = self.shard_path if self.shard_path.exists() else work
            if not (retired / WAL_DIR).exists() and (copy / WAL_DIR).exists():
                (copy / WAL_DIR).rename(retired / WAL_DIR)
            shutil.rmtree(copy, ignore_errors=True)
            retired.rename(self.shard_path)
            log.warning("edge collection %s: restored after an interrupted optimize", self._name)
        for leftover in (work, self._sibling("trash")):
            shutil.rmtree(leftover, ignore_errors=True)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        optimizer = self._optimizer
        if optimizer is not None and optimizer.returncode is None:
            optimizer.kill()
        async with self._optimizing:
            pass  # an optimize in flight has discarded its copy
        try:
            await self._run(self._close_shard, when_closed=True)
        finally:
            self._executor.shutdown(wait=False)

    def _close_shard(self) -> None:
        shard, self._shard = self._shard, None
        if shard is not None:
            shard.flush()
            shard.close()

    # -- writes -----------------------------------------------------------------------------

    def _update(self, op: qe.UpdateOperation) -> None:
        self._require().update(op)
        if self._journal is not None:
            self._journal.append(op)

    async def _write(self, op: qe.UpdateOperation) -> None:
        async with self._write_gate:
            await self._run(self._update, op)

    async def _upsert(self, listing_id: str, vectors: Any, payload: dict[str, Any]) -> None:
        version = payload_version(payload)
        op = qe.UpdateOperation.upsert_points(
            [qe.Point(point_id(listing_id), vectors, {**payload, "listing_id": listing_id})],
            condition=None if version is None else edge_write_condition(version),
        )
        await self._write(op)

    async def upsert_listing(self, point: ListingPoint) -> None:
        m = as_matrix(point.vectors, self._dim, f"listing {point.listing_id!r}")
        check_listing_payload(point.listing_id, point.payload)
        await self._upsert(point.listing_id, m.tolist(), point.payload)

    async def upsert_listings(self, points: Sequence[ListingPoint]) -> None:
        batch, versions = checked_batch(points, self._dim)
        if not batch:
            return
        async with self._write_gate:
            await self._run(self._upsert_batch, batch, versions)

    def _upsert_batch(self, batch: list[BatchPoint], versions: dict[str, int]) -> None:
        # On the store's thread, not the loop: the binding takes 0.05-0.1 ms to convert each
        # listing's payload, so a batch of 1000 would hold the loop for up to a tenth of a second.
        op = qe.UpdateOperation.upsert_points(
            [qe.Point(point_id(lid), vectors, payload) for lid, vectors, payload in batch],
            condition=edge_batch_write_condition(versions),
        )
        self._update(op)

    async def set_payload(self, listing_id: str, payload: dict[str, Any]) -> None:
        check_listing_payload(listing_id, payload)
        if not payload:
            return
        # By filter, so an absent point is a no-op rather than Edge's "No point with id" error.
        target = edge_payload_target(listing_id, payload_version(payload))
        await self._write(qe.UpdateOperation.set_payload_by_filter(target, payload))

    async def tombstone(self, listing_id: str, version: int, state: str) -> None:
        payload = TombstonePayload(listing_id=listing_id, version=version, state=state)
        await self._upsert(listing_id, placeholder_vector(self._dim), payload.to_store())

    async def purge_tombstones(self, older_than: float) -> int:
        async with self._write_gate:
            return await self._run(self._purge, edge_old_tombstones(older_than))

    def _purge(self, old: qe.Filter) -> int:
        shard = self._require()
        found = shard.count(qe.CountRequest(exact=True, filter=old))
        if found:
            self._update(qe.UpdateOperation.delete_points_by_filter(old))
        return found

    async def delete(self, listing_id: str) -> None:
        await self._write(qe.UpdateOperation.delete_points([point_id(listing_id)]))

    # -- reads ------------------------------------------------------------------------------

    def _retrieve(self, listing_id: str, with_vectors: bool) -> StoredListing | None:
        records = self._require().retrieve([point_id(listing_id)], True, with_vectors)
        return stored_listing(records[0], with_vectors) if records else None

    async def get(self, listing_id: str, with_vectors: bool = False) -> StoredListing | None:
        return await self._run(self._retrieve, listing_id, with_vectors)

    def _request(
        self, query: Matrix, k: int, where: Conditions, offset: int, threshold: float | None
    ) -> qe.QueryRequest:
        return qe.QueryRequest(
            limit=k,
            offset=offset,
            query=qe.Query.Nearest(query.tolist()),
            filter=edge_filter(where),
            score_threshold=threshold,
            with_payload=True,
            with_vector=True,
            params=self._search_params,
        )

    def _query(
        self, query: Matrix, k: int, where: Conditions, offset: int, threshold: float | None
    ) -> list[Hit]:
        request = self._request(query, k, where, offset, threshold)
        return hits(self._require().query(request), query)

    def _query_batch(
        self, queries: Sequence[tuple[Matrix, Conditions]], k: int, thresholds: list[float | None]
    ) -> list[list[Hit]]:
        requests = [
            self._request(query, k, where, 0, threshold)
            for (query, where), threshold in zip(queries, thresholds, strict=True)
        ]
        found = self._require().query_batch(qe.QueryBatchRequest(requests))
        return [hits(points, query) for points, (query, _) in zip(found, queries, strict=True)]

    async def _nearest_batch(
        self, queries: Sequence[tuple[Matrix, Conditions]], k: int, thresholds: list[float | None]
    ) -> list[list[Hit]]:
        return await self._run(self._query_batch, queries, k, thresholds)

    async def _nearest(
        self, query: Matrix, k: int, where: Conditions, offset: int, threshold: float | None
    ) -> list[Hit]:
        return await self._run(self._query, query, k, where, offset, threshold)

    async def facet(
        self, key: str, filters: SearchFilters | None = None, limit: int = 1000
    ) -> dict[str, int]:
        request = qe.FacetRequest(
            key, limit=limit, exact=True, filter=edge_filter(conditions(filters))
        )
        response = await self._run(lambda: self._require().facet(request))
        return {str(hit.value): int(hit.count) for hit in response.hits}

    async def count(self, filters: SearchFilters | None = None) -> int:
        request = qe.CountRequest(exact=True, filter=edge_filter(conditions(filters)))
        return await self._run(lambda: self._require().count(request))

    async def scroll(
        self, with_vectors: bool = False, page_size: int = 256, include_tombstones: bool = False
    ) -> AsyncIterator[StoredListing]:
        where = edge_filter(Conditions(tombstones=include_tombstones))
        offset: qe.PointId | None = None
        while True:
            request = qe.ScrollRequest(
                offset=offset,
                limit=page_size,
                filter=where,
                with_payload=True,
                with_vector=with_vectors,
            )
            records, offset = await self._run(lambda r=request: self._require().scroll(r))
            for record in records:
                yield stored_listing(record, with_vectors)
            if offset is None:
                return

    async def vector_size(self) -> int:
        size = await self._run(stored_vector_size, self.shard_path)
        if size is not None:
            return size
        if self._shard is not None:
            return self._dim
        raise StoreError(f"collection {self._name!r} does not exist at {self.shard_path}")

    async def stats(self) -> dict[str, int]:
        """Points, segments and indexed vectors, as Edge reports them (for logs and metrics)."""
        info = await self._run(lambda: self._require().info())
        return {
            "points": info.points_count,
            "segments": info.segments_count,
            "indexed_vectors": info.indexed_vectors_count,
        }

    # -- aliases ----------------------------------------------------------------------------

    async def alias_target(self) -> str | None:
        """The collection the alias points at now, or None."""
        return await self._run(self._aliases.get, self._alias)

    async def point_alias_to_self(self) -> None:
        exists = await self._run((self.shard_path / EDGE_CONFIG_FILE).exists)
        if not exists:
            raise StoreError(f"collection {self._name!r} does not exist: ensure_collection() first")
        await self._run(self._aliases.set, self._alias, self._name)
        log.info("alias %s -> %s", self._alias, self._name)

    # -- optimize ---------------------------------------------------------------------------

    async def optimize(self) -> None:
        """Build indexes without stalling searches or writes for the build.

        Edge holds the GIL for the whole of EdgeShard.optimize(), so a thread would freeze the
        event loop for the build; a child process builds a copy instead. Writes pause while the
        segments are copied; searches and writes pause while the copy is swapped in (close,
        rename, load, replay of the writes made during the build).
        """
        async with self._optimizing:
            started = time.perf_counter()
            await self._copy_for_optimizer()
            copied = time.perf_counter()
            try:
                summary = await self._optimize_copy()
                built = time.perf_counter()
                replayed = await self._run(self._swap_in_copy)
            except BaseException:
                await self._run(self._discard_copy, when_closed=True)
                raise
            swapped = time.perf_counter()
            await asyncio.to_thread(shutil.rmtree, self._sibling("trash"), True)
        log.info(
            "edge collection %s optimized: copy %.2fs, build %.2fs, swap %.2fs, %d writes "
            "replayed, %s",
            self._name,
            copied - started,
            built - copied,
            swapped - built,
            replayed,
            summary,
        )

    async def _copy_for_optimizer(self) -> None:
        async with self._write_gate:
            # Searches go on while the files are copied: they read, and nothing else writes.
            await self._run(self._flush_and_journal)
            try:
                await asyncio.to_thread(self._copy_segments)
            except BaseException:
                await self._run(self._discard_copy, when_closed=True)
                raise

    def _flush_and_journal(self) -> None:
        self._require().flush()
        self._journal = []

    def _copy_segments(self) -> None:
        # The write-ahead log is never truncated by Edge and only grows: it is moved, not copied,
        # when the copy is swapped in.
        source, work = self.shard_path, self._sibling("optimizing")
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(
            source,
            work,
            symlinks=True,
            ignore=lambda d, names: [WAL_DIR] if Path(d) == source else [],
        )

    async def _optimize_copy(self) -> dict[str, Any]:
        if self._closed:
            raise StoreError(f"store {self._name!r} closed while optimizing")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            OPTIMIZER_MODULE,
            str(self._sibling("optimizing")),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._optimizer = proc
        try:
            out, err = await proc.communicate()
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        finally:
            self._optimizer = None
        if self._closed:
            raise StoreError(f"store {self._name!r} closed while optimizing")
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip()[-2000:]
            raise StoreError(f"edge optimizer exited with {proc.returncode}: {tail}")
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            summary = json.loads(lines[-1]) if lines else {}
        except ValueError:
            summary = {"output": lines[-1]}
        return summary if isinstance(summary, dict) else {"output": summary}

    def _swap_in_copy(self) -> int:
        journal = self._journal or []
        path, work, retired = self.shard_path, self._sibling("optimizing"), self._sibling("retired")
        # The child opened the copy with a fresh, empty log; the live log carries the op numbers.
        shutil.rmtree(work / WAL_DIR, ignore_errors=True)
        self._close_shard()
        path.rename(retired)
        try:
            (retired / WAL_DIR).rename(work / WAL_DIR)
            work.rename(path)
            shard = qe.EdgeShard.load(str(path), self._config())
            try:
                # Loading replays the log only from its last flush mark, not from the copy's
                # point: the writes made during the build come from the journal (an op that
                # Edge replays as well is applied twice, which changes nothing).
                for op in journal:
                    shard.update(op)
                shard.flush()
            except BaseException:
                shard.close()
                raise
        except BaseException:
            # Back to the shard that holds every write; the copy is dropped.
            self._recover_interrupted_swap()
            self._shard = qe.EdgeShard.load(str(path), self._config())
            raise
        self._shard = shard
        self._journal = None
        # From here the optimized shard is the durable one; the retired copy is only garbage.
        retired.rename(self._sibling("trash"))
        return len(journal)

    def _discard_copy(self) -> None:
        self._journal = None
        shutil.rmtree(self._sibling("optimizing"), ignore_errors=True)


def _count_live(shard_path: Path) -> int:
    """Live listings of a shard nobody holds (tombstones left out); opens and closes it."""
    # Its own stored configuration: a config passed to load() would be written over it.
    shard = qe.EdgeShard.load(str(shard_path))
    try:
        request = qe.CountRequest(exact=True, filter=edge_filter(conditions(None)))
        return int(shard.count(request))
    finally:
        shard.close()


class EdgeCollections(Collections):
    """The alias's collections in an Edge index directory, and its alias file.

    A collection another process holds open (the service, a worker) is counted on a copy of its
    files, as reindex reads it: Edge locks an open shard. Nothing else under the index is touched.
    """

    def __init__(self, index_path: Path, alias: str) -> None:
        self._root = Path(index_path)
        self._alias = alias
        self._aliases = AliasFile(self._root)

    async def alias_target(self) -> str | None:
        return await asyncio.to_thread(self._aliases.get, self._alias)

    def _names(self) -> list[str]:
        if not self._root.is_dir():
            return []
        return sorted(
            p.name
            for p in self._root.iterdir()
            if alias_model_id(self._alias, p.name) is not None and (p / EDGE_CONFIG_FILE).exists()
        )

    def _info(self, name: str) -> CollectionInfo:
        model_id = alias_model_id(self._alias, name)
        dim = stored_vector_size(self._root / name)
        if dim is None:
            return CollectionInfo(name, model_id, None, None, "no readable shard")
        try:
            try:
                points = _count_live(self._root / name)
            except Exception as e:
                if "WouldBlock" not in str(e):
                    raise
                # Held open elsewhere: count a copy, in a dot directory no collection can be.
                with tempfile.TemporaryDirectory(prefix=".alias-", dir=self._root) as scratch:
                    copy = copy_shard(self._root, name, Path(scratch))
                    points = _count_live(copy)
        except Exception as e:
            return CollectionInfo(name, model_id, None, dim, f"cannot read it: {e}")
        return CollectionInfo(name, model_id, points, dim)

    async def list(self) -> list[CollectionInfo]:
        names = await asyncio.to_thread(self._names)
        return [await asyncio.to_thread(self._info, name) for name in names]

    async def point_alias(self, collection: str) -> None:
        if collection not in await asyncio.to_thread(self._names):
            raise StoreError(f"collection {collection!r} does not exist under {self._root}")
        await asyncio.to_thread(self._aliases.set, self._alias, collection)
        log.info("alias %s -> %s", self._alias, collection)

    async def close(self) -> None:
        return None
