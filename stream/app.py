"""The indexer's Faust app: agent index_listings, the version-guard table, the optimize timer."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, cast

import faust
import structlog
from faust.streams import _current_event
from mode.types.signals import BaseSignalT

from stream.batching import Batcher
from stream.indexer import Applied, Incoming, ListingIndexer, Prepared
from stream.offsets import HoleWatch, InOrder, guard_commits
from stream.resources import WorkerResources
from stream.settings import WorkerSettings

log = structlog.get_logger("stream.app")

VERSIONS_TABLE = "listing_versions"


def changelog_topic(settings: WorkerSettings) -> str:
    """The changelog topic of the version table (create it with the listings topic's partitions)."""
    return f"{settings.stream.group_id}-{VERSIONS_TABLE}-changelog"


class TableGuard:
    """The version guard on a changelog-backed Faust table: listing_id -> JSON version/deleted."""

    def __init__(self, table: faust.types.TableT[str, bytes]) -> None:
        self._table = table

    def last(self, listing_id: str) -> Applied | None:
        raw = self._table.get(listing_id)
        if raw is None:
            return None
        entry = json.loads(raw)
        return Applied(version=int(entry["version"]), deleted=bool(entry["deleted"]))

    def record(self, listing_id: str, applied: Applied, message: Incoming) -> None:
        # Faust picks the changelog partition from the event being processed; batches are handled
        # outside the stream's own iteration, so point it at this message's event explicitly.
        token = _current_event.set(weakref.ref(message.handle))
        try:
            entry = {"version": applied.version, "deleted": applied.deleted}
            self._table[listing_id] = json.dumps(entry).encode()
        finally:
            _current_event.reset(token)


class TopicDeadLetters:
    """Dead letters on a Faust topic: original key and value bytes, headers say why and where."""

    def __init__(self, topic: faust.TopicT) -> None:
        self._topic = topic

    async def send(
        self, message: Incoming, reason: str, stage: str, attempts: int, detail: str
    ) -> None:
        headers = [
            *[(k, v) for k, v in message.headers if not k.startswith("dlq.")],
            ("dlq.reason", reason.encode()),
            ("dlq.stage", stage.encode()),
            ("dlq.attempts", str(attempts).encode()),
            ("dlq.detail", detail[:2000].encode()),
            ("dlq.topic", message.topic.encode()),
            ("dlq.partition", str(message.partition).encode()),
            ("dlq.offset", str(message.offset).encode()),
        ]
        sent = await self._topic.send(key=message.key, value=message.value, headers=headers)
        await sent


def _incoming(event: faust.EventT[bytes]) -> Incoming:
    msg = event.message
    headers = msg.headers
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    return Incoming(
        key=msg.key,
        value=msg.value if msg.value is not None else b"",
        headers=[(str(k), v.encode() if isinstance(v, str) else bytes(v or b"")) for k, v in pairs],
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        handle=event,
    )


ResourcesFactory = Callable[[faust.App], Awaitable[WorkerResources]]


def create_app(
    settings: WorkerSettings, resources: WorkerResources | None = None, **faust_options: Any
) -> faust.App:
    """The indexer app. `resources` (model, store, fetcher) are built on first use unless given."""
    s, b = settings.stream, settings.broker
    app = faust.App(
        s.group_id,
        broker=[f"kafka://{host}" for host in b.broker.split(",")],
        datadir=s.data_dir,
        store="memory://",
        # Keys and values are read as raw bytes: malformed events must reach the dead-letter topic
        # exactly as they arrived.
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=b.topic_partitions,
        topic_replication_factor=1,
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=s.heartbeat_interval_s,
        broker_max_poll_interval=s.max_poll_interval_s,
        broker_rebalance_timeout=s.max_poll_interval_s,
        broker_commit_interval=s.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        producer_partitioner=None,
        web_enabled=s.web_port is not None,
        web_port=s.web_port or 6066,
        web_host="127.0.0.1",
        **faust_options,
    )
    listings = app.topic(b.topic, key_type=bytes, value_type=bytes, partitions=b.topic_partitions)
    dlq = app.topic(b.dlq_topic, key_type=bytes, value_type=bytes, partitions=1)
    versions = app.Table(
        VERSIONS_TABLE,
        default=None,
        partitions=b.topic_partitions,
        key_type=str,
        value_type=bytes,
    )
    guard = TableGuard(versions)
    dead_letters = TopicDeadLetters(dlq)
    holder = _Holder(settings, resources, guard, dead_letters)
    # Events are applied in log order and none is skipped, whatever faust's consumer does.
    in_order = InOrder(app)
    hole_watch = HoleWatch(app, b.topic, in_order)

    @app.task  # type: ignore[untyped-decorator]
    async def load_resources() -> None:
        # Loading the model overlaps the consumer group join.
        await holder.get()

    @app.agent(listings, name="index_listings")
    async def index_listings(stream: faust.StreamT[bytes]) -> None:
        indexer = await holder.get()
        pipeline = _Pipeline(app)

        async def handle(events: list[faust.EventT[bytes]]) -> None:
            batch = [_incoming(e) for e in events]
            log.debug("batch_taken", offsets=sorted((m.partition, m.offset) for m in batch))
            prepared = await indexer.prepare(batch, pipeline.barrier)
            await pipeline.drain()
            pipeline.submit(prepared, _finish_and_ack(app, stream, indexer, prepared, events))

        # Batching is done here rather than with Stream.take(): events are acked one by one by
        # _finish_and_ack, only once the store acknowledged their writes.
        batcher: Batcher[faust.EventT[bytes]] = Batcher(s.take_batch_size, s.take_within_s, handle)
        flusher = asyncio.ensure_future(batcher.flush_when_idle())
        flusher.add_done_callback(pipeline.crash_on_error)
        # Events read while Faust is still seeking the partitions after table recovery can be
        # skipped (and acked) by Faust itself; start reading once the worker is ready.
        await cast(Any, app.tables).recovery.completed.wait()
        guard_commits(app.consumer)
        try:
            async for event in cast(faust.Stream[bytes], stream).noack().events():
                if await in_order.admit(event):
                    await batcher.add(event)
        finally:
            flusher.cancel()
            await pipeline.drain()

    @app.timer(interval=s.hole_check_every_s)  # type: ignore[untyped-decorator]
    async def refetch_dropped_events() -> None:
        await hole_watch.check()

    @app.timer(interval=s.optimize_check_every_s)  # type: ignore[untyped-decorator]
    async def optimize_when_idle() -> None:
        indexer = holder.ready
        if indexer is not None:
            await indexer.maybe_optimize(s.optimize_after_writes, s.optimize_idle_s)

    @app.on_before_shutdown.connect
    async def close_resources(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        await holder.close()

    app.lookalike = holder  # type: ignore[attr-defined]
    return app


class _Pipeline:
    """One batch is embedded and written while the next one is fetched and decoded, unless they
    share a listing: then the next one waits, since the stored state decides what to fetch."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._crashing: asyncio.Future[None] | None = None
        self._pending: asyncio.Task[None] | None = None
        self._ids: set[str] = set()

    async def barrier(self, ids: set[str]) -> None:
        if ids & self._ids:
            await self.drain()

    async def drain(self) -> None:
        pending, self._pending = self._pending, None
        self._ids = set()
        if pending is not None:
            await pending

    def submit(self, prepared: Prepared, work: Awaitable[None]) -> None:
        self._ids = prepared.listing_ids
        self._pending = asyncio.ensure_future(work)
        self._pending.add_done_callback(self.crash_on_error)

    def crash_on_error(self, task: asyncio.Future[None]) -> None:
        # A batch that could not be written stays unacked; the worker stops so that a restart
        # (or another worker) gets those events again, rather than committing past them.
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        log.error("batch_failed", error=repr(error))
        if isinstance(error, Exception):
            self._crashing = asyncio.ensure_future(self._app.crash(error))


async def _finish_and_ack(
    app: faust.App,
    stream: faust.StreamT[bytes],
    indexer: ListingIndexer,
    prepared: Prepared,
    events: list[Any],
) -> None:
    await indexer.finish(prepared)
    # Table changelog records must be on the broker before the offsets that depend on them.
    await app.producer.flush()
    for event in events:
        await stream.ack(event)
    log.debug(
        "batch_acked",
        offsets=sorted((e.message.partition, e.message.offset) for e in events),
    )


class _Holder:
    """Builds the worker's heavy resources once per process and shares them."""

    def __init__(
        self,
        settings: WorkerSettings,
        resources: WorkerResources | None,
        guard: TableGuard,
        dead_letters: TopicDeadLetters,
    ) -> None:
        self._settings = settings
        self._resources = resources
        self._guard = guard
        self._dead_letters = dead_letters
        self._lock = asyncio.Lock()
        self.ready: ListingIndexer | None = None

    @property
    def resources(self) -> WorkerResources | None:
        return self._resources

    async def get(self) -> ListingIndexer:
        async with self._lock:
            if self.ready is None:
                if self._resources is None:
                    self._resources = await WorkerResources.open(self._settings)
                self.ready = self._resources.indexer(self._guard, self._dead_letters)
            return self.ready

    async def close(self) -> None:
        async with self._lock:
            if self.ready is not None:
                async with self.ready.store_lock:
                    pass
            if self._resources is not None and self._resources.owned:
                await self._resources.close()
