"""At-least-once guards around faust-streaming's consumer: offsets (#596, #606), lost broker logs,
bounded shutdown. The one module that touches Faust's and aiokafka's private state (both pinned)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from faust.types import TP

log = structlog.get_logger("stream.offsets")

# faust-streaming 0.15 has two bugs that lose or strand an event:
# - #606: `_new_offset` commits over a single missing offset at the head of the acked run (and
#   over any when the committed offset is 0), so an event that was never processed is skipped
#   for good once later ones are acked;
# - #596: a message fetched while the flow is suspended around table recovery can be dropped
#   without being delivered, leaving a hole that nothing will ever fill.
# The indexer is idempotent (deterministic point ids, version guard), so the safe answers are:
# never commit past an offset that was not acked, and fetch again from the committed offset when
# such a hole outlives a check interval with no message in flight to fill it.


def _log_starts(consumer: Any) -> dict[TP, int]:
    """Per partition, the first offset in the log, filled in by HoleWatch (needs the broker)."""
    starts: dict[TP, int] | None = getattr(consumer, "_lookalike_log_starts", None)
    if starts is None:
        starts = {}
        consumer._lookalike_log_starts = starts
    return starts


_UNKNOWN = -1


def _known_committed(consumer: Any, tp: TP) -> int | None:
    committed = consumer._committed_offset.get(tp)
    return int(committed) if committed is not None and committed >= 0 else None


def _known_owed(consumer: Any, tp: TP) -> int | None:
    """The first offset of `tp` the group has not committed (the log start when nothing was
    committed); None while that log start has not been asked for yet."""
    committed = consumer._committed_offset.get(tp)
    if committed is not None and committed >= 0:
        return int(committed)
    return _log_starts(consumer).get(tp)


def _head_hole(consumer: Any, tp: TP) -> int | None:
    """The owed offset of `tp` if it is not acked; _UNKNOWN when it is not known yet."""
    owed = _known_owed(consumer, tp)
    if owed is None:
        return _UNKNOWN
    if owed in consumer._acked_index[tp] or consumer._gap[tp].overlaps_point(owed):
        # Acked, or a real gap in the log (compaction, transaction markers).
        return None
    return owed


async def owed_offset(consumer: Any, tp: TP) -> int:
    """The first offset of `tp` the group has not committed: where processing must resume."""
    owed = _known_owed(consumer, tp)
    if owed is None:
        earliest = await consumer.earliest_offsets(tp)
        owed = _log_starts(consumer)[tp] = max(int(earliest.get(tp, 0) or 0), 0)
    return owed


def _release(consumer: Any, message: Any) -> None:
    """Forget a delivered message without acking it: it will be read again, and a rebalance must
    not wait for it."""
    consumer._unacked_messages.discard(message)


def _log_end(consumer: Any, tp: TP) -> int | None:
    """The partition's log end from the last fetch response (no request); None when unknown."""
    try:
        end = consumer.highwater(tp)
    except Exception:  # not assigned (any more)
        return None
    return None if end is None else int(end)


def _forget_log(consumer: Any, tp: TP, order: InOrder | None) -> None:
    """Drop everything remembered about `tp`'s log: the broker does not have that log any more."""
    for message in list(consumer._unacked_messages):
        if message.tp == tp:
            message.acked = True  # a late ack of an event of the old log must not count
            consumer._unacked_messages.discard(message)
    for table in (
        consumer._committed_offset,
        consumer._read_offset,
        consumer._acked,
        consumer._acked_index,
        consumer._gap,
        _log_starts(consumer),
    ):
        table.pop(tp, None)
    if order is not None:
        order.forget(tp)


def _lost_log(consumer: Any, tp: TP, remembered: int | None) -> int | None:
    """The log end when it is below an offset the worker already got past: a broker that came
    back empty (Tansu keeps its log in memory). On a live log that cannot happen."""
    end = _log_end(consumer, tp)
    if end is not None and remembered is not None and end < remembered:
        _say_log_lost(tp, remembered, why="the log ends below what was read", log_end=end)
        return end
    return None


def _say_log_lost(tp: TP, remembered: int | None, why: str, log_end: int | None = None) -> None:
    """The one line a worker writes when it takes a partition up from a new log's start."""
    log.warning(
        "broker_log_lost",
        topic=tp.topic,
        partition=tp.partition,
        remembered=remembered,
        log_end=log_end,
        why=why,
        action="reading the new log from its start",
    )


class InOrder:
    """Lets an event through only when it is the next offset its partition owes, so events are
    applied in log order even when faust skipped some (#596): it then seeks back to the owed
    offset and lets later events go, unacked, until that one arrives."""

    # A jump that survives this many seeks is a real gap in the log (compaction, transactions).
    MAX_SEEKS = 3
    RESEEK_AFTER_S = 5.0

    def __init__(self, app: Any) -> None:
        self._app = app
        self._generation: Any = object()
        self._next: dict[TP, int] = {}
        self._seeks: dict[TP, tuple[int, float]] = {}
        # The offset after the highest admitted, kept across rebalances: a log that ends below
        # it is not the log those events came from.
        self._highest: dict[TP, int] = {}
        # Topics this worker had to create again (the broker lost them), and the partitions of
        # theirs already taken up from the new log's start.
        self._replaced: set[str] = set()
        self._taken_up: set[TP] = set()

    def rewind(self, tp: TP, offset: int) -> None:
        """Another party seeked `tp` to `offset`: expect it next."""
        self._next[tp] = offset
        self._seeks.pop(tp, None)

    def forget(self, tp: TP) -> None:
        """Expect whatever the group owes next on `tp` (its log was lost)."""
        self._next.pop(tp, None)
        self._seeks.pop(tp, None)
        self._highest.pop(tp, None)

    def log_replaced(self, topic: str) -> None:
        """`topic` was created anew: whatever was remembered or committed of it (a commit sent
        to the old broker may reach the new one) belongs to a log that is gone."""
        self._replaced.add(topic)
        self._taken_up = {tp for tp in self._taken_up if tp.topic != topic}

    def remembered(self, tp: TP) -> int | None:
        """The offset after the highest this worker admitted on `tp`, or the next it expects."""
        known = [o for o in (self._next.get(tp), self._highest.get(tp)) if o is not None]
        return max(known) if known else None

    def reset(self) -> None:
        """A rebalance: every partition resumes from what the group committed. (Tansu reports
        generation 0 on every join, so the generation alone does not show a rebalance.)"""
        self._next.clear()
        self._seeks.clear()
        consumer = self._app.consumer
        consumer._lookalike_revocations = getattr(consumer, "_lookalike_revocations", 0) + 1

    async def admit(self, event: Any) -> bool:
        app, message = self._app, event.message
        consumer = app.consumer
        if message.acked:
            return False  # an event of a log the broker lost (see _forget_log)
        if app.consumer_generation_id != self._generation:
            self._generation = app.consumer_generation_id
            self.reset()
        tp, offset = message.tp, message.offset
        if tp.topic in self._replaced and tp not in self._taken_up:
            self._taken_up.add(tp)
            _say_log_lost(tp, self.remembered(tp), why="the worker created the topic again")
            _forget_log(consumer, tp, self)
        expected = self._next.get(tp)
        if expected is None:
            expected = await owed_offset(consumer, tp)
            if _known_committed(consumer, tp) is None and self._highest.get(tp, 0) > expected:
                # This worker read past here before, yet the group has committed nothing: the
                # broker came back without its log (and offsets). Nothing older is owed.
                _say_log_lost(tp, self._highest[tp], why="the group's offsets are gone")
                self._highest.pop(tp, None)
        remembered = max(expected, self._highest.get(tp, 0))
        if offset < remembered and _lost_log(consumer, tp, remembered) is not None:
            _forget_log(consumer, tp, self)
            expected = await owed_offset(consumer, tp)
        if offset == expected:
            self._next[tp] = offset + 1
            self._highest[tp] = max(self._highest.get(tp, 0), offset + 1)
            self._seeks.pop(tp, None)
            return True
        if offset > expected:
            seeks, last = self._seeks.get(tp, (0, 0.0))
            if seeks >= self.MAX_SEEKS:
                log.warning(
                    "offset_gap_accepted", partition=tp.partition, start=expected, end=offset
                )
                self._next[tp] = offset + 1
                self._highest[tp] = max(self._highest.get(tp, 0), offset + 1)
                self._seeks.pop(tp, None)
                return True
            now = time.monotonic()
            if seeks == 0 or now - last >= self.RESEEK_AFTER_S:
                log.warning(
                    "events_skipped_by_consumer", partition=tp.partition, owed=expected, got=offset
                )
                await consumer.seek(tp, expected)
                self._seeks[tp] = (seeks + 1, now)
        self._next.setdefault(tp, expected)
        # Later than owed (waiting for the seek), or earlier (already taken): not this time.
        _release(consumer, message)
        return False


def guard_commits(consumer: Any) -> None:
    """Make the consumer wait, rather than commit, while its head offset is not acked."""
    if getattr(consumer, "_lookalike_guarded", False):
        return
    original: Callable[[TP], int | None] = consumer._new_offset

    def new_offset(tp: TP) -> int | None:
        if consumer._acked.get(tp) and _head_hole(consumer, tp) is not None:
            return None
        return original(tp)

    filter_committable: Callable[[Any], dict[TP, int]] = consumer._filter_committable_offsets

    def committable(tps: Any) -> dict[TP, int]:
        offsets = filter_committable(tps)
        if offsets:
            log.debug(
                "offsets_committing", offsets=[[tp.partition, o] for tp, o in offsets.items()]
            )
        return offsets

    add_gap: Callable[[TP, int, int], Awaitable[None]] = consumer._add_gap

    async def logged_gap(tp: TP, offset_from: int, offset_to: int) -> None:
        # Faust later commits over a gap as if it were acked: worth a line when it happens.
        log.warning(
            "offset_gap", topic=tp.topic, partition=tp.partition, start=offset_from, end=offset_to
        )
        await add_gap(tp, offset_from, offset_to)

    commit_offsets: Callable[..., Awaitable[bool]] = consumer._commit_offsets

    async def commit_recorded_when_done(offsets: Any, *args: Any, **kwargs: Any) -> bool:
        # Faust records the offsets as committed even when the commit failed. One that failed
        # across a rebalance (the broker went away) would put the old log's offsets back after
        # the revoke cleared them, and every event below them would be skipped.
        revocations = getattr(consumer, "_lookalike_revocations", 0)
        done = await commit_offsets(offsets, *args, **kwargs)
        if not done and getattr(consumer, "_lookalike_revocations", 0) != revocations:
            for tp in offsets:
                consumer._committed_offset.pop(tp, None)
        return done

    consumer._commit_offsets = commit_recorded_when_done
    consumer._add_gap = logged_gap
    consumer._new_offset = new_offset
    consumer._filter_committable_offsets = committable
    consumer._lookalike_guarded = True


class HoleWatch:
    """Finds an event the consumer has read past but that is neither acked, nor with the agent,
    nor queued for it, two checks in a row, and fetches its partition again from there."""

    def __init__(self, app: Any, topic: str, order: InOrder | None = None) -> None:
        self._app = app
        self._topic = topic
        self._order = order
        self._seen: dict[TP, int] = {}

    async def _first_unacked(self, tp: TP) -> int | None:
        consumer = self._app.consumer
        await owed_offset(consumer, tp)  # learns the log start when nothing was committed
        return _head_hole(consumer, tp)

    def _held(self, tp: TP, offset: int) -> bool:
        """The event is with the agent (taken, unacked) or waiting in a stream queue for it."""
        if any(
            m.tp == tp and m.offset == offset for m in list(self._app.consumer._unacked_messages)
        ):
            return True
        for channel in list(self._app.topics._tp_index.get(tp, ())):
            for event in list(channel.queue._queue):
                if event.message.offset == offset:
                    return True
        return False

    async def _log_was_lost(self, tp: TP) -> bool:
        """A position or commit past the log end fetches nothing on Tansu, forever (no
        out-of-range error): start the partition again from the new log's start."""
        consumer = self._app.consumer
        position = await consumer.position(tp)
        seen = [consumer._committed_offset.get(tp), position]
        if self._order is not None:
            seen.append(self._order.remembered(tp))
        known = [int(o) for o in seen if o is not None and o >= 0]
        if _lost_log(consumer, tp, max(known) if known else None) is None:
            return False
        _forget_log(consumer, tp, self._order)
        start = await owed_offset(consumer, tp)
        await consumer.seek(tp, start)
        if self._order is not None:
            self._order.rewind(tp, start)
        return True

    async def check(self) -> list[tuple[TP, int]]:
        """One pass; returns the (partition, offset) pairs it fetched again."""
        consumer = self._app.consumer
        refetched: list[tuple[TP, int]] = []
        holes: dict[TP, int] = {}
        for tp in list(consumer.assignment()):
            if tp.topic != self._topic:
                continue
            if await self._log_was_lost(tp):
                continue
            offset = await self._first_unacked(tp)
            if offset is None:
                continue
            position = await consumer.position(tp)
            if position is None or position <= offset or self._held(tp, offset):
                continue
            if self._seen.get(tp) == offset:
                log.warning("refetching_dropped_event", partition=tp.partition, offset=offset)
                await consumer.seek(tp, offset)
                if self._order is not None:
                    self._order.rewind(tp, offset)
                refetched.append((tp, offset))
            else:
                holes[tp] = offset
        self._seen = holes
        return refetched


async def _within(awaitable: Awaitable[Any], timeout_s: float) -> bool:
    """Await for at most timeout_s, without waiting for the cancellation to be honoured (Faust's
    commit swallows a CancelledError and starts over, so asyncio.wait_for would hang too)."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        return False
    task.result()
    return True


def _patch_fetcher_close() -> None:
    """aiokafka 0.14's Fetcher.close awaits each cancelled fetch task; one cancelled during its
    retry backoff (broker down) raises CancelledError out of consumer.stop(), the consumer
    thread dies before it signals its stop, and mode waits its shutdown_timeout (60 s)."""
    from aiokafka.consumer.fetcher import Fetcher

    if getattr(Fetcher, "_lookalike_patched", False):
        return
    original = Fetcher.close

    async def close(self: Any) -> None:
        pending = list(self._pending_tasks)
        self._pending_tasks = set()
        try:
            await original(self)
        finally:
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    Fetcher.close = close
    Fetcher._lookalike_patched = True


def bound_shutdown(app: Any, budget_s: float = 4.0) -> None:
    """SIGTERM ends the worker within seconds even with the broker down: every wait on the broker
    during the stop shares one budget. Offsets not committed are read again later (idempotent).

    Without it, a stop with the broker down took 61 s (the fetcher above), or never ended: the
    last commit (App.on_stop -> consumer.wait_empty) is retried by aiokafka for as long as the
    broker is away, and a pending send holds producer.flush and its stop for up to
    producer_request_timeout (20 min)."""
    consumer, producer = app.consumer, app.producer
    if getattr(consumer, "_lookalike_bounded", False):
        return
    _patch_fetcher_close()
    consumer._thread.shutdown_timeout = budget_s / 2  # a backstop; mode's default is 60 s
    deadline: list[float] = []

    def bounded(
        step: str, original: Callable[[], Awaitable[Any]], only_when_stopping: bool
    ) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            if only_when_stopping and not app.should_stop:  # a rebalance: as Faust does it
                await original()
                return
            loop = asyncio.get_running_loop()
            if not deadline:
                deadline.append(loop.time() + budget_s)
            left = max(deadline[0] - loop.time(), 0.5)
            if not await _within(original(), left):
                log.warning("shutdown_wait_abandoned", step=step, after_s=round(left, 1))

        return call

    consumer.wait_empty = bounded("commit", consumer.wait_empty, True)
    producer.flush = bounded("producer_flush", producer.flush, True)
    producer.on_stop = bounded("producer_stop", producer.on_stop, False)
    consumer._lookalike_bounded = True


def _aiokafka_consumer(consumer: Any) -> Any:
    """The aiokafka consumer under Faust's, or None while it is not started."""
    try:
        return consumer._thread._ensure_consumer()
    except Exception:  # not started yet, or stopped
        return None


def partition_states(consumer: Any) -> list[tuple[TP, int | None, int | None, float | None]]:
    """Per assigned partition, read only (stream.health): the first offset the group owes (its
    committed offset, else the log start once known), the log end from the last fetch, and when
    (unix seconds) the broker last answered a fetch of it; None where not known yet."""
    inner = _aiokafka_consumer(consumer)
    if inner is None:
        return []
    try:
        assigned = list(inner.assignment())
    except Exception:  # between a revoke and an assignment
        return []
    states: list[tuple[TP, int | None, int | None, float | None]] = []
    for tp in assigned:
        tp = TP(tp.topic, tp.partition)
        try:
            # aiokafka updates it with each fetch response, records or not (its public API).
            polled_ms = inner.last_poll_timestamp(tp)
        except Exception:  # revoked meanwhile
            polled_ms = None
        polled = polled_ms / 1000 if polled_ms else None
        states.append((tp, _known_owed(consumer, tp), _log_end(consumer, tp), polled))
    return states
