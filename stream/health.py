"""Whether an indexer worker is ready: started, partitions assigned, polling, events finishing."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stream.metrics import LiveState, PartitionLag
from stream.offsets import partition_states
from stream.persist import Outage
from stream.settings import StreamSettings


@dataclass(frozen=True)
class HealthPolicy:
    """How recent the worker's signs of life must be."""

    # With nothing in flight, the broker must have answered a fetch this recently. An idle
    # consumer is answered every 1.5 s (Faust's fetch_max_wait_ms), records or not.
    poll_stale_s: float = 8.0
    # With events in flight, one must have finished (stored, dead-lettered or sent to retry)
    # this recently, or since the work in flight began.
    stall_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: StreamSettings) -> HealthPolicy:
        return cls(poll_stale_s=settings.ready_poll_stale_s, stall_s=settings.ready_stall_s)


@dataclass(frozen=True)
class PartitionState:
    """One assigned partition as the consumer sees it; None where it does not know yet."""

    topic: str
    partition: int
    # The first offset the group owes: its committed offset (or the log start).
    committed: int | None
    # The log end (high watermark) from the last fetch response.
    log_end: int | None
    # When (unix seconds) the broker last answered a fetch of this partition.
    fetched_at: float | None

    @property
    def lag(self) -> int | None:
        if self.committed is None or self.log_end is None:
            return None
        # Tansu under-reports the high watermark of batched writes: never a negative lag.
        return max(self.log_end - self.committed, 0)


@dataclass(frozen=True)
class Snapshot:
    """Everything readiness is decided on, read at one moment."""

    # mode's service state of the Faust app: init, running, crashed, stopping, shutdown.
    app_state: str
    crash: str | None
    # The model is loaded and the store open: the agents are consuming.
    loaded: bool
    partitions: tuple[PartitionState, ...]
    in_flight: int
    # Seconds since an event finished, or since the work in flight began if that is later.
    quiet_s: float | None
    # Dependency ("store", "broker") -> seconds it has been failing an event's call.
    outages: Mapping[str, float]
    now: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Verdict:
    """The answer of /readyz: ready or not, why not, and what it was decided on."""

    ready: bool
    reason: str | None
    detail: Mapping[str, Any]

    def body(self) -> dict[str, Any]:
        return {"ready": self.ready, "reason": self.reason, **self.detail}


def _not_ready_reason(s: Snapshot, policy: HealthPolicy) -> str | None:
    if s.app_state == "crashed":
        return f"the worker crashed: {s.crash or 'unknown reason'}"
    if s.app_state in ("stopping", "shutdown"):
        return "the worker is stopped"
    if s.app_state != "running" or not s.loaded:
        return "starting: loading the model, opening the store"
    if not s.partitions:
        return (
            "no partitions assigned (joining the consumer group, or more workers than partitions)"
        )
    if s.outages:
        what, since = max(s.outages.items(), key=lambda item: item[1])
        return f"the {what} has been unreachable for {since:.0f} s; events wait for it"
    if s.in_flight:
        if s.quiet_s is not None and s.quiet_s > policy.stall_s:
            return f"stalled: {s.in_flight} events in flight, none finished for {s.quiet_s:.0f} s"
        return None
    fetched = [p.fetched_at for p in s.partitions if p.fetched_at is not None]
    if not fetched:
        return "not polling yet: the broker has answered no fetch"
    age = s.now - max(fetched)
    if age > policy.poll_stale_s:
        return f"not polling: the broker last answered a fetch {age:.0f} s ago"
    return None


def assess(s: Snapshot, policy: HealthPolicy) -> Verdict:
    """Ready only while running with partitions assigned and either finishing events or, when
    idle, polling the broker; else not, with the first reason found."""
    fetched = [p.fetched_at for p in s.partitions if p.fetched_at is not None]
    reason = _not_ready_reason(s, policy)
    detail: dict[str, Any] = {
        "state": s.app_state,
        "partitions": [
            {"topic": p.topic, "partition": p.partition, "lag": p.lag} for p in s.partitions
        ],
        "in_flight": s.in_flight,
        "last_fetch_s_ago": round(s.now - max(fetched), 1) if fetched else None,
    }
    return Verdict(ready=reason is None, reason=reason, detail=detail)


class WorkerHealth:
    """The live state of one worker's Faust app and indexer, for /readyz and the metrics' gauges.

    The app (`watch`) tells its state and partitions; the indexer tells when it is loaded
    (`loaded`) and when each event's work begins and ends (`began`, `finished`). Read on the event
    loop that runs the app; nothing here blocks."""

    def __init__(
        self, policy: HealthPolicy | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy or HealthPolicy()
        self._clock = clock
        self._app: Any = None
        self._outage: Outage | None = None
        self._in_flight = 0
        self._busy_since: float | None = None
        self._finished_at: float | None = None

    def watch(self, app: Any) -> None:
        """The Faust app whose state and consumer this reports."""
        self._app = app

    def loaded(self, outage: Outage) -> None:
        """The indexer is built; `outage` tells which of its dependencies are failing."""
        self._outage = outage

    def began(self) -> None:
        if self._in_flight == 0:
            self._busy_since = self._clock()
        self._in_flight += 1

    def finished(self) -> None:
        self._in_flight = max(self._in_flight - 1, 0)
        self._finished_at = self._clock()

    def _quiet_s(self) -> float | None:
        marks = [m for m in (self._busy_since, self._finished_at) if m is not None]
        return self._clock() - max(marks) if marks else None

    def _partitions(self) -> tuple[PartitionState, ...]:
        if self._app is None or not self._app.started:
            return ()
        return tuple(
            PartitionState(tp.topic, tp.partition, committed, log_end, fetched_at)
            for tp, committed, log_end, fetched_at in partition_states(self._app.consumer)
        )

    def snapshot(self) -> Snapshot:
        app = self._app
        state = "init" if app is None else str(app.state)
        crash = None if app is None or app.crash_reason is None else repr(app.crash_reason)
        now = self._clock()
        outages = (
            {what: now - since for what, since in self._outage.failing.items()}
            if self._outage is not None
            else {}
        )
        return Snapshot(
            app_state=state,
            crash=crash,
            loaded=self._outage is not None,
            partitions=self._partitions(),
            in_flight=self._in_flight,
            quiet_s=self._quiet_s(),
            outages=outages,
        )

    def check(self) -> Verdict:
        return assess(self.snapshot(), self.policy)

    def live(self) -> LiveState:
        """The gauges' values (WorkerMetrics.live)."""
        snapshot = self.snapshot()
        lags = [
            PartitionLag(p.topic, p.partition, p.lag)
            for p in snapshot.partitions
            if p.lag is not None
        ]
        ready = assess(snapshot, self.policy).ready
        return LiveState(ready=ready, in_flight=snapshot.in_flight, lags=lags)
