"""Worker readiness decided from its state (stream.health), the gauges read at each scrape
(stream.metrics), and the status port's routes (stream.status)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from stream.health import HealthPolicy, PartitionState, Snapshot, WorkerHealth, assess
from stream.metrics import LiveState, PartitionLag, WorkerMetrics
from stream.persist import Outage
from stream.status import status_app

POLICY = HealthPolicy(poll_stale_s=8.0, stall_s=10.0)
NOW = 1_000_000.0


def _partition(fetched_ago: float | None = 1.0, lag: int = 0) -> PartitionState:
    fetched = None if fetched_ago is None else NOW - fetched_ago
    return PartitionState("listings", 0, committed=10, log_end=10 + lag, fetched_at=fetched)


def _snapshot(**overrides: Any) -> Snapshot:
    values: dict[str, Any] = {
        "app_state": "running",
        "crash": None,
        "loaded": True,
        "partitions": (_partition(),),
        "in_flight": 0,
        "quiet_s": 100.0,
        "outages": {},
        "now": NOW,
    }
    return Snapshot(**{**values, **overrides})


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (
            {"app_state": "crashed", "crash": "RuntimeError('boom')"},
            "crashed: RuntimeError('boom')",
        ),
        ({"app_state": "stopping"}, "stopped"),
        ({"app_state": "shutdown"}, "stopped"),
        ({"app_state": "init"}, "starting"),
        ({"loaded": False}, "starting"),
        ({"partitions": ()}, "no partitions assigned"),
        ({"outages": {"store": 3.2}}, "the store has been unreachable for 3 s"),
        ({"in_flight": 4, "quiet_s": 12.0}, "stalled: 4 events in flight, none finished for 12 s"),
        ({"partitions": (_partition(None),)}, "not polling yet"),
        ({"partitions": (_partition(9.0),)}, "the broker last answered a fetch 9 s ago"),
    ],
)
def test_each_way_of_not_being_ready_has_its_reason(overrides: dict[str, Any], reason: str) -> None:
    verdict = assess(_snapshot(**overrides), POLICY)
    assert verdict.ready is False
    assert verdict.reason is not None and reason in verdict.reason
    assert verdict.body()["reason"] == verdict.reason


def test_ready_when_idle_and_polled_or_busy_and_finishing() -> None:
    assert assess(_snapshot(), POLICY).ready
    # Busy: partitions fetched long ago (paused while the agent works through its buffer) is fine
    # while events keep finishing.
    busy = _snapshot(in_flight=30, quiet_s=0.5, partitions=(_partition(60.0, lag=500),))
    verdict = assess(busy, POLICY)
    assert verdict.ready, verdict.reason
    assert verdict.body()["partitions"] == [{"topic": "listings", "partition": 0, "lag": 500}]
    # Fetched any of its partitions recently: polling.
    two = (_partition(30.0), PartitionState("listings", 1, 0, 0, NOW - 1.0))
    assert assess(_snapshot(partitions=two), POLICY).ready


def test_a_negative_lag_reads_as_none_behind() -> None:
    # Tansu under-reports the high watermark of batched writes.
    assert PartitionState("listings", 0, committed=60, log_end=1, fetched_at=None).lag == 0
    assert PartitionState("listings", 0, committed=None, log_end=1, fetched_at=None).lag is None


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_work_after_a_long_idle_is_not_a_stall_until_it_stops_finishing() -> None:
    clock = _Clock()
    health = WorkerHealth(POLICY, clock=clock)
    health.loaded(Outage())
    clock.now = 500.0  # idle for long, then a burst arrives
    health.began()
    health.began()
    clock.now = 505.0
    assert health.snapshot().quiet_s == 5.0
    health.finished()
    clock.now = 512.0
    assert health.snapshot().quiet_s == 7.0  # since the last event finished
    snapshot = health.snapshot()
    assert snapshot.in_flight == 1
    clock.now = 520.0
    # (No Faust app here: the snapshot is completed as a running one's would be.)
    running = replace(health.snapshot(), app_state="running", partitions=(_partition(),))
    assert assess(running, POLICY).reason == ("stalled: 1 events in flight, none finished for 15 s")
    health.finished()
    assert health.snapshot().in_flight == 0


def test_an_unwatched_worker_is_starting() -> None:
    verdict = WorkerHealth(POLICY).check()
    assert (verdict.ready, verdict.detail["state"]) == (False, "init")


def _gauges(metrics: WorkerMetrics) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            found.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return found


def test_the_gauges_are_read_at_each_scrape() -> None:
    state = LiveState(
        ready=True,
        in_flight=3,
        lags=[PartitionLag("listings", 0, 7), PartitionLag("listings", 1, 0)],
    )
    metrics = WorkerMetrics(live=lambda: state)
    gauges = _gauges(metrics)
    assert gauges["lookalike_indexer_ready"] == {(): 1.0}
    assert gauges["lookalike_indexer_events_in_flight"] == {(): 3.0}
    assert gauges["lookalike_indexer_consumer_lag"] == {
        (("partition", "0"), ("topic", "listings")): 7.0,
        (("partition", "1"), ("topic", "listings")): 0.0,
    }
    # Partition 1 revoked: it is gone from the next scrape, not left at its last value.
    state = LiveState(ready=False, in_flight=0, lags=[PartitionLag("listings", 0, 2)])
    gauges = _gauges(metrics)
    assert gauges["lookalike_indexer_ready"] == {(): 0.0}
    assert list(gauges["lookalike_indexer_consumer_lag"]) == [
        (("partition", "0"), ("topic", "listings"))
    ]


async def test_the_status_port_answers_health_readiness_and_metrics() -> None:
    health = WorkerHealth(POLICY)
    metrics = WorkerMetrics(live=health.live)
    metrics.count("indexed")
    async with TestClient(TestServer(status_app(health, metrics))) as client:
        healthz = await client.get("/healthz")
        assert (healthz.status, await healthz.json()) == (200, {"status": "ok"})
        readyz = await client.get("/readyz")
        body = await readyz.json()
        assert readyz.status == 503
        assert body["ready"] is False and body["reason"].startswith("starting"), body
        scraped = await client.get("/metrics")
        assert scraped.status == 200
        assert scraped.headers["Content-Type"].startswith("text/plain")
        text = await scraped.text()
        assert 'lookalike_indexer_events_total{outcome="indexed"} 1.0' in text
        assert "lookalike_indexer_ready 0.0" in text
