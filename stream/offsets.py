"""At-least-once guards around faust-streaming's offset bookkeeping (upstream #596 and #606)."""

from __future__ import annotations

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

    def rewind(self, tp: TP, offset: int) -> None:
        """Another party seeked `tp` to `offset`: expect it next."""
        self._next[tp] = offset
        self._seeks.pop(tp, None)

    async def admit(self, event: Any) -> bool:
        app, message = self._app, event.message
        consumer = app.consumer
        if app.consumer_generation_id != self._generation:
            # A rebalance: every partition resumes from what the group committed.
            self._generation = app.consumer_generation_id
            self._next.clear()
            self._seeks.clear()
        tp, offset = message.tp, message.offset
        expected = self._next.get(tp)
        if expected is None:
            expected = await owed_offset(consumer, tp)
        if offset == expected:
            self._next[tp] = offset + 1
            self._seeks.pop(tp, None)
            return True
        if offset > expected:
            seeks, last = self._seeks.get(tp, (0, 0.0))
            if seeks >= self.MAX_SEEKS:
                log.warning(
                    "offset_gap_accepted", partition=tp.partition, start=expected, end=offset
                )
                self._next[tp] = offset + 1
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

    async def check(self) -> list[tuple[TP, int]]:
        """One pass; returns the (partition, offset) pairs it fetched again."""
        consumer = self._app.consumer
        refetched: list[tuple[TP, int]] = []
        holes: dict[TP, int] = {}
        for tp in list(consumer.assignment()):
            if tp.topic != self._topic:
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
