"""Infrastructure calls (the store, the broker) retried with backoff until they succeed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

log = structlog.get_logger("stream.persist")

T = TypeVar("T")


@dataclass
class Outage:
    """What is failing right now, by dependency ("store", "broker"), since when (monotonic)."""

    failing: dict[str, float] = field(default_factory=dict)

    def down(self, what: str) -> None:
        self.failing.setdefault(what, time.monotonic())

    def up(self, what: str) -> None:
        self.failing.pop(what, None)


@dataclass
class Persistence:
    """Retries an infrastructure call forever, with capped exponential backoff.

    An unreachable store or broker is never the event's fault: the event is neither dead-lettered
    nor dropped, it waits (and holds its offset uncommitted) until the dependency is back. Only
    cancellation (shutdown) ends the wait."""

    infra_errors: tuple[type[BaseException], ...]
    first_delay_s: float = 0.1
    max_delay_s: float = 5.0
    outage: Outage = field(default_factory=Outage)

    async def call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        delay = self.first_delay_s
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await call()
            except self.infra_errors as exc:
                self.outage.down(what)
                log.warning(
                    "dependency_unavailable",
                    dependency=what,
                    attempt=attempt,
                    retry_in_s=round(delay, 2),
                    error=repr(exc)[:500],
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay_s)
                continue
            if attempt > 1:
                log.info("dependency_recovered", dependency=what, attempts=attempt)
            self.outage.up(what)
            return result
