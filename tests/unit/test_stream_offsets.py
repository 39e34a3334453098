"""The at-least-once guards on faust's offset bookkeeping (stream.offsets)."""

from __future__ import annotations

from typing import Any

import faust
import pytest
from faust.types import TP

from stream.offsets import HoleWatch, InOrder, guard_commits

TOPIC = "listings"
PART = TP(TOPIC, 0)


@pytest.fixture
def app() -> faust.App:
    """A real faust app, never started: only its consumer's offset bookkeeping is used."""
    app = faust.App("offsets-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    app.topic(TOPIC)
    return app


@pytest.fixture
def consumer(app: faust.App) -> Any:
    return app.consumer


def _state(consumer: Any, committed: int, acked: list[int]) -> None:
    consumer._committed_offset[PART] = committed
    consumer._acked[PART] = list(acked)
    consumer._acked_index[PART] = set(acked)


def test_unguarded_faust_commits_over_a_missing_head_offset(consumer: Any) -> None:
    # Upstream #606, kept as a canary: if faust fixes it, the guard can go.
    _state(consumer, committed=5, acked=[6, 7])
    assert consumer._new_offset(PART) == 8


@pytest.mark.parametrize("committed", [0, 5])
def test_guard_waits_while_the_head_offset_is_not_acked(consumer: Any, committed: int) -> None:
    guard_commits(consumer)
    _state(consumer, committed=committed, acked=[committed + 1, committed + 2])
    assert consumer._new_offset(PART) is None
    # Once the head is acked the whole run commits.
    consumer._acked[PART].append(committed)
    consumer._acked_index[PART].add(committed)
    assert consumer._new_offset(PART) == committed + 3


def test_guard_waits_for_the_log_start_when_nothing_was_committed(consumer: Any) -> None:
    # Unguarded faust commits 16 here: the 13 events before were never seen (the restart race).
    consumer._committed_offset.pop(PART, None)
    consumer._acked[PART] = [13, 14, 15]
    consumer._acked_index[PART] = {13, 14, 15}
    guard_commits(consumer)
    assert consumer._new_offset(PART) is None  # log start unknown: wait
    consumer._lookalike_log_starts[PART] = 0
    assert consumer._new_offset(PART) is None  # offset 0 is owed
    consumer._lookalike_log_starts[PART] = 13  # the log really starts at 13 (retention)
    assert consumer._new_offset(PART) == 16


def test_guard_lets_a_real_log_gap_through(consumer: Any) -> None:
    guard_commits(consumer)
    _state(consumer, committed=5, acked=[7, 8])
    consumer._gap[PART].addi(5, 7)  # offsets 5 and 6 do not exist (compaction, markers)
    assert consumer._new_offset(PART) == 9


class _Broker:
    """Stands in for the broker side of the consumer: its assignment, position and seeks."""

    def __init__(self, consumer: Any, monkeypatch: pytest.MonkeyPatch, position: int) -> None:
        self.position = position
        self.seeks: list[tuple[TP, int]] = []
        monkeypatch.setattr(consumer, "assignment", lambda: {PART, TP("other", 0)})
        monkeypatch.setattr(consumer, "position", self._position)
        monkeypatch.setattr(consumer, "seek", self._seek)
        monkeypatch.setattr(consumer, "earliest_offsets", self._earliest)

    async def _earliest(self, *tps: TP) -> dict[TP, int]:
        return dict.fromkeys(tps, 0)

    async def _position(self, tp: TP) -> int:
        return self.position

    async def _seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


async def test_hole_watch_refetches_a_hole_that_outlives_one_check(
    app: faust.App, consumer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = _Broker(consumer, monkeypatch, position=7)
    _state(consumer, committed=5, acked=[6])
    watch = HoleWatch(app, TOPIC)
    assert await watch.check() == []  # first sighting: it may still be on its way
    assert await watch.check() == [(PART, 5)]
    assert broker.seeks == [(PART, 5)]
    # Acked meanwhile: no hole, nothing fetched again.
    _state(consumer, committed=5, acked=[5, 6])
    assert await watch.check() == []
    assert await watch.check() == []


async def test_hole_watch_refetches_from_the_start_when_nothing_was_committed(
    app: faust.App, consumer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The restart case: flow resumed during recovery, the fetched events were dropped with the
    # cleared queues, nothing was ever acked or committed, the position is past them.
    broker = _Broker(consumer, monkeypatch, position=30)
    watch = HoleWatch(app, TOPIC)
    await watch.check()
    assert await watch.check() == [(PART, 0)]
    assert broker.seeks == [(PART, 0)]


async def test_hole_watch_leaves_events_not_read_yet_or_waiting_in_a_queue(
    app: faust.App, consumer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = _Broker(consumer, monkeypatch, position=5)
    _state(consumer, committed=5, acked=[])
    watch = HoleWatch(app, TOPIC)
    for _ in range(3):
        assert await watch.check() == []  # offset 5 not read yet
    broker.position = 9
    channel = app.topic(TOPIC)
    app.topics._tp_index[PART].add(channel)
    message = faust.types.Message(TOPIC, 0, 5, 0.0, 0, None, b"k", b"v", None)
    channel.queue.put_nowait(faust.Event(app, b"k", b"v", {}, message))
    for _ in range(3):
        assert await watch.check() == []  # waiting in the agent's queue
    assert broker.seeks == []


def _event(app: faust.App, offset: int) -> Any:
    message = faust.types.Message(TOPIC, 0, offset, 0.0, 0, None, b"k", b"v", None)
    return faust.Event(app, b"k", b"v", {}, message)


async def _admitted(order: InOrder, app: faust.App, offsets: list[int]) -> list[int]:
    return [o for o in offsets if await order.admit(_event(app, o))]


async def test_in_order_lets_events_through_in_log_order_only(
    app: faust.App, consumer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = _Broker(consumer, monkeypatch, position=0)
    _state(consumer, committed=3, acked=[])
    order = InOrder(app)
    # Below the committed offset: already done. Then 3, 4 in order.
    assert await _admitted(order, app, [2, 3, 4]) == [3, 4]
    assert broker.seeks == []
    # The consumer skipped 5..6: 7 and 8 are held back, one seek to 5, then 5, 6, 7 pass.
    assert await _admitted(order, app, [7, 8]) == []
    assert broker.seeks == [(PART, 5)]
    assert await _admitted(order, app, [5, 6, 7, 8, 9]) == [5, 6, 7, 8, 9]
    # A re-delivery of something already taken is not applied twice.
    assert await _admitted(order, app, [6]) == []


async def test_in_order_starts_at_the_log_start_and_accepts_a_real_gap(
    app: faust.App, consumer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = _Broker(consumer, monkeypatch, position=0)
    consumer._committed_offset.pop(PART, None)
    order = InOrder(app)
    monkeypatch.setattr(InOrder, "RESEEK_AFTER_S", 0.0)
    assert await _admitted(order, app, [0, 1]) == [0, 1]
    # Offsets 2..4 do not exist: after MAX_SEEKS seeks that all come back at 5, 5 is accepted.
    attempts = [5] * (InOrder.MAX_SEEKS + 1)
    assert await _admitted(order, app, attempts) == [5]
    assert broker.seeks == [(PART, 2)] * InOrder.MAX_SEEKS
