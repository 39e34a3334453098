"""Per-listing lanes: events of one listing run in order, different listings run side by side."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger("stream.lanes")

Work = Callable[[], Awaitable[Any]]


class Lanes:
    """Runs submitted work concurrently, except that work under one key runs in submission order.

    A slow listing (a photo host that stalls) delays only the events queued behind it under its
    own key. At most `max_in_flight` items are admitted at once; `submit` waits for a free slot,
    which is the back-pressure on the stream. `on_error` is told of work that raised: the indexer
    turns every data fault into a dead letter, so an error here is a bug or a shutdown."""

    def __init__(self, max_in_flight: int, on_error: Callable[[BaseException], None]) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tails: dict[object, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_error = on_error
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    async def submit(self, key: object, work: Work) -> None:
        """Queue `work` behind earlier work of `key`; returns once it is admitted, not done."""
        if self._closed:
            raise RuntimeError("lanes are closed")
        await self._slots.acquire()
        before = self._tails.get(key)
        task = asyncio.ensure_future(self._run(key, before, work))
        self._tails[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: object, before: asyncio.Task[None] | None, work: Work) -> None:
        try:
            if before is not None:
                # Its outcome is its own; only its completion matters here.
                await asyncio.gather(before, return_exceptions=True)
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._on_error(exc)
        finally:
            self._slots.release()
            if self._tails.get(key) is asyncio.current_task():
                del self._tails[key]

    async def drain(self) -> None:
        """Wait until everything admitted so far is done."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel what is in flight (it stays unacked, so it is read again) and take no more."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
