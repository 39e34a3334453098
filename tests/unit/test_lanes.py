"""Lanes: one key runs in order, keys run side by side, the in-flight bound holds the stream."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from stream.lanes import Lanes


def _never(error: BaseException) -> None:
    raise AssertionError(f"unexpected error: {error!r}")


async def test_work_of_one_key_runs_in_order_while_other_keys_pass_it() -> None:
    lanes = Lanes(16, _never)
    done: list[str] = []
    slow = asyncio.Event()

    def step(name: str, gate: asyncio.Event | None = None) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            if gate is not None:
                await gate.wait()
            done.append(name)

        return run

    await lanes.submit("A", step("A1", slow))
    await lanes.submit("A", step("A2"))
    await lanes.submit("B", step("B1"))
    await asyncio.sleep(0.05)
    assert done == ["B1"]  # A1 is stuck; A2 waits behind it; B does not
    slow.set()
    await lanes.drain()
    assert done == ["B1", "A1", "A2"]


async def test_submit_waits_once_max_in_flight_items_are_admitted() -> None:
    lanes = Lanes(2, _never)
    gate = asyncio.Event()

    async def blocked() -> None:
        await gate.wait()

    await lanes.submit("A", blocked)
    await lanes.submit("B", blocked)
    third = asyncio.ensure_future(lanes.submit("C", blocked))
    await asyncio.sleep(0.05)
    assert not third.done()
    gate.set()
    await asyncio.wait_for(third, 1)
    await lanes.drain()
    assert len(lanes) == 0


async def test_an_error_is_reported_and_the_lane_goes_on() -> None:
    errors: list[BaseException] = []
    lanes = Lanes(4, errors.append)
    ran: list[int] = []

    async def boom() -> None:
        raise RuntimeError("bug")

    async def fine() -> None:
        ran.append(1)

    await lanes.submit("A", boom)
    await lanes.submit("A", fine)
    await lanes.drain()
    assert [type(e) for e in errors] == [RuntimeError]
    assert ran == [1]


async def test_close_cancels_what_is_in_flight_and_refuses_more() -> None:
    lanes = Lanes(4, _never)
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    await lanes.submit("A", forever)
    await started.wait()
    await asyncio.wait_for(lanes.close(), 1)
    assert len(lanes) == 0
    with pytest.raises(RuntimeError):
        await lanes.submit("A", forever)
