"""Index upkeep on the worker's timers: build the search index when idle, purge old tombstones."""

from __future__ import annotations

import time

import structlog

from models.store.types import VectorStore
from stream.indexer import ListingIndexer

log = structlog.get_logger("stream.maintenance")

DAY_S = 86_400.0


class Maintenance:
    """Optimizes the store after enough writes once the stream went quiet, and drops tombstones
    older than the retention (their versions no longer guard anything worth keeping)."""

    def __init__(self, store: VectorStore, indexer: ListingIndexer) -> None:
        self._store = store
        self._indexer = indexer

    async def optimize_when_idle(self, after_writes: int, idle_s: float) -> bool:
        indexer = self._indexer
        if indexer.writes_since_optimize < after_writes:
            return False
        if time.monotonic() - indexer.last_write_at < idle_s:
            return False
        started = time.monotonic()
        writes, indexer.writes_since_optimize = indexer.writes_since_optimize, 0
        # The store keeps taking writes while it builds its indexes.
        await self._store.optimize()
        log.info("store_optimized", writes=writes, took_s=round(time.monotonic() - started, 3))
        return True

    async def purge_tombstones(self, retention_days: float) -> int:
        cutoff = time.time() - retention_days * DAY_S
        purged = await self._store.purge_tombstones(cutoff)
        if purged:
            log.info("tombstones_purged", purged=purged, retention_days=retention_days)
        return purged
