"""Groups stream events into batches: full ones under load, a partial one after a short wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """Collects items and hands them to `handle` in batches of at most `size`, or once the oldest
    waited `within` seconds. Batches are handled one at a time and in order; `add` waits while a
    full batch cannot be handed over (back-pressure on the stream)."""

    def __init__(
        self, size: int, within: float, handle: Callable[[list[T]], Awaitable[None]]
    ) -> None:
        self._size = size
        self._within = within
        self._handle = handle
        self._items: list[T] = []
        self._oldest = 0.0
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._items)

    async def add(self, item: T) -> None:
        if not self._items:
            self._oldest = time.monotonic()
        self._items.append(item)
        if len(self._items) >= self._size:
            await self.flush()

    async def flush(self) -> None:
        """Hand over what is buffered now (at most `size` items per batch)."""
        async with self._lock:
            while self._items:
                batch, self._items = self._items[: self._size], self._items[self._size :]
                self._oldest = time.monotonic()
                await self._handle(batch)

    async def flush_when_idle(self) -> None:
        """Run forever: flush a partial batch once its oldest item waited `within` seconds."""
        tick = max(self._within / 4, 0.005)
        while True:
            await asyncio.sleep(tick)
            if self._items and time.monotonic() - self._oldest >= self._within:
                await self.flush()
