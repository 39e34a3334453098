"""The indexer's Faust app: agents index_listings and retry_listings, and the upkeep timers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, cast

import faust
import structlog
from mode.types.signals import BaseSignalT

from stream.adapters import TopicDeadLetters, TopicRetries, incoming
from stream.credentials import faust_credentials
from stream.health import WorkerHealth
from stream.indexer import Incoming, ListingIndexer
from stream.lanes import Lanes
from stream.maintenance import Maintenance
from stream.metrics import WorkerMetrics
from stream.offsets import HoleWatch, InOrder, bound_shutdown, guard_commits
from stream.resources import WorkerResources
from stream.settings import WorkerSettings
from stream.topics import restore_topics

log = structlog.get_logger("stream.app")

# A retried event due later than this is held no longer (its delay header is not trusted blindly).
MAX_RETRY_WAIT_S = 3600.0


def create_app(
    settings: WorkerSettings,
    resources: WorkerResources | None = None,
    *,
    health: WorkerHealth | None = None,
    metrics: WorkerMetrics | None = None,
    **faust_options: Any,
) -> faust.App:
    """The indexer app. `resources` (model, store, fetcher) are built on first use unless given;
    `health` is told the app's state and each event's work; `metrics` (the resources' own when
    they are given) are counted into."""
    s, b = settings.stream, settings.broker
    if resources is not None:
        metrics = resources.metrics
    metrics = metrics or WorkerMetrics()
    health = health or WorkerHealth()
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
        # The worker's port is stream.status, not Faust's web server.
        web_enabled=False,
        broker_credentials=faust_credentials(b),
        **faust_options,
    )
    listings = app.topic(b.topic, key_type=bytes, value_type=bytes, partitions=b.topic_partitions)
    retry = app.topic(b.retry_topic, key_type=bytes, value_type=bytes, partitions=1)
    dlq = app.topic(b.dlq_topic, key_type=bytes, value_type=bytes, partitions=1)
    health.watch(app)
    metrics.live = health.live
    runtime = _Runtime(
        app, settings, resources, metrics, health, TopicDeadLetters(dlq), TopicRetries(retry)
    )
    # Events are applied in log order and none is skipped, whatever faust's consumer does.
    in_order = InOrder(app)
    hole_watch = HoleWatch(app, b.topic, in_order)

    @app.task  # type: ignore[untyped-decorator]
    async def load_resources() -> None:
        # Loading the model overlaps the consumer group join.
        await runtime.get()

    @app.agent(listings, name="index_listings")
    async def index_listings(stream: faust.StreamT[bytes]) -> None:
        running = await runtime.get()
        # Events read while Faust is still seeking the partitions after recovery can be skipped
        # (and acked) by Faust itself; start reading once the worker is ready.
        await cast(Any, app.tables).recovery.completed.wait()
        guard_commits(app.consumer)
        bound_shutdown(app)
        async for event in cast(faust.Stream[bytes], stream).noack().events():
            if await in_order.admit(event):
                await running.submit(stream, event, incoming(event))

    @app.agent(retry, name="retry_listings")
    async def retry_listings(stream: faust.StreamT[bytes]) -> None:
        running = await runtime.get()
        async for event in cast(faust.Stream[bytes], stream).noack().events():
            message = incoming(event)
            # The retry topic is in due order: one delay per round, written as events failed.
            wait = min(message.due - time.time(), MAX_RETRY_WAIT_S)
            if wait > 0:
                await asyncio.sleep(wait)
            await running.submit(stream, event, message)

    @app.timer(interval=s.hole_check_every_s)  # type: ignore[untyped-decorator]
    async def refetch_dropped_events() -> None:
        await hole_watch.check()

    @app.timer(interval=s.hole_check_every_s)  # type: ignore[untyped-decorator]
    async def recreate_lost_topics() -> None:
        created = await asyncio.to_thread(restore_topics, settings)
        if b.topic in created:
            in_order.log_replaced(b.topic)

    @app.on_partitions_revoked.connect
    async def forget_positions(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        in_order.reset()

    @app.timer(interval=s.optimize_check_every_s)  # type: ignore[untyped-decorator]
    async def optimize_when_idle() -> None:
        if runtime.ready is not None:
            await runtime.ready.maintenance.optimize_when_idle(
                s.optimize_after_writes, s.optimize_idle_s
            )

    @app.timer(interval=s.purge_every_s)  # type: ignore[untyped-decorator]
    async def purge_tombstones() -> None:
        if runtime.ready is not None:
            await runtime.ready.maintenance.purge_tombstones(s.tombstone_retention_days)

    @app.on_before_shutdown.connect
    async def close_resources(
        sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        await runtime.close()

    return app


@dataclass
class _Running:
    """One process's indexer and the lanes its events run in."""

    indexer: ListingIndexer
    lanes: Lanes
    maintenance: Maintenance
    health: WorkerHealth

    async def submit(
        self, stream: faust.StreamT[bytes], event: faust.EventT[bytes], message: Incoming
    ) -> None:
        # One lane per listing (the key is the listing id); a keyless event gets its own.
        key: object = message.key if message.key is not None else object()

        async def work() -> None:
            # Counted from its turn in the lane: an event queued behind its listing's previous
            # one is not stalled, the one ahead of it is.
            self.health.began()
            try:
                await self.indexer.handle(message)
                # Acked only once the store (or the DLQ or retry topic) acknowledged the outcome.
                await stream.ack(event)
            finally:
                self.health.finished()

        await self.lanes.submit(key, work)


class _Runtime:
    """Builds the worker's heavy resources once per process and shares them between agents."""

    def __init__(
        self,
        app: faust.App,
        settings: WorkerSettings,
        resources: WorkerResources | None,
        metrics: WorkerMetrics,
        health: WorkerHealth,
        dead_letters: TopicDeadLetters,
        retries: TopicRetries,
    ) -> None:
        self._app = app
        self._settings = settings
        self._resources = resources
        self._metrics = metrics
        self._health = health
        self._dead_letters = dead_letters
        self._retries = retries
        self._lock = asyncio.Lock()
        self.ready: _Running | None = None
        self._crashing: set[asyncio.Future[None]] = set()

    async def get(self) -> _Running:
        async with self._lock:
            if self.ready is None:
                if self._resources is None:
                    self._resources = await WorkerResources.open(self._settings, self._metrics)
                resources = self._resources
                indexer = resources.indexer(self._dead_letters, self._retries)
                lanes = Lanes(self._settings.stream.max_in_flight, self._crash)
                maintenance = Maintenance(resources.store, indexer)
                self.ready = _Running(indexer, lanes, maintenance, self._health)
                self._health.loaded(indexer.persist.outage)
            return self.ready

    def _crash(self, error: BaseException) -> None:
        # Every data fault is dead-lettered and every infrastructure fault retried, so this is a
        # bug: stop with the event unacked, so that a restart (or another worker) gets it again.
        log.error("event_handling_crashed", error=repr(error))
        if isinstance(error, Exception):
            crashing = asyncio.ensure_future(self._app.crash(error))
            self._crashing.add(crashing)
            crashing.add_done_callback(self._crashing.discard)

    async def close(self) -> None:
        async with self._lock:
            if self.ready is not None:
                # In-flight events stay unacked: they are read again after the restart.
                await self.ready.lanes.close()
            if self._resources is not None:
                if self._resources.owned:
                    await self._resources.close()
                else:
                    await self._resources.stop()
