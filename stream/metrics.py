"""Prometheus metrics counted by the indexer worker, in a registry of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Outcome = Literal["indexed", "payload_only", "deleted", "stale", "retried", "dead_lettered"]
OUTCOMES: tuple[Outcome, ...] = (
    "indexed",
    "payload_only",
    "deleted",
    "stale",
    "retried",
    "dead_lettered",
)

FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600)
EMBED_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass(frozen=True)
class PartitionLag:
    """One assigned partition's consumer lag: log end minus the group's committed offset."""

    topic: str
    partition: int
    lag: int


@dataclass(frozen=True)
class LiveState:
    """What the worker is doing now, read when metrics are collected (not counted as it happens)."""

    ready: bool
    in_flight: int
    lags: Sequence[PartitionLag] = ()


LiveSource = Callable[[], LiveState]


class _LiveCollector(Collector):
    """Gauges read from the running worker at each scrape, so none is ever stale: a partition
    revoked from this worker disappears from the lag gauge with the next scrape."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "lookalike_indexer_ready",
                "1 while the worker's /readyz says ready, else 0.",
            ),
            GaugeMetricFamily(
                "lookalike_indexer_events_in_flight",
                "Events being processed now (fetch, embed, write).",
            ),
            GaugeMetricFamily(
                "lookalike_indexer_consumer_lag",
                "Events of an assigned partition the group has not committed yet "
                "(log end minus committed offset).",
                labels=["topic", "partition"],
            ),
        )

    def describe(self) -> Iterator[Metric]:
        # Names only, so that the registry can refuse a clash without asking the worker.
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        source = self._metrics.live
        if source is None:
            return iter(families)  # no worker attached (yet): the families, without samples
        state = source()
        ready, in_flight, lag = families
        ready.add_metric([], 1.0 if state.ready else 0.0)
        in_flight.add_metric([], float(state.in_flight))
        for p in state.lags:
            lag.add_metric([p.topic, str(p.partition)], float(p.lag))
        return iter((ready, in_flight, lag))


@dataclass
class WorkerMetrics:
    """Counters and histograms of one worker process; `render()` is the Prometheus text format.
    `live`, when set (stream.health), feeds the gauges of the worker's current state."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    live: LiveSource | None = None

    def __post_init__(self) -> None:
        self.events = Counter(
            "lookalike_indexer_events",
            "Listing events handled, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.events.labels(outcome)
        self.dead_letters = Counter(
            "lookalike_indexer_dead_letters",
            "Events sent to the dead-letter topic, by reason and the stage that failed.",
            ["reason", "stage"],
            registry=self.registry,
        )
        self.images_fetched = Counter(
            "lookalike_indexer_images_fetched",
            "Images fetched and decoded.",
            registry=self.registry,
        )
        self.images_failed = Counter(
            "lookalike_indexer_images_failed",
            "Images that could not be fetched or decoded, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.images_reused = Counter(
            "lookalike_indexer_images_reused",
            "Images whose content was already embedded, reused without inference.",
            registry=self.registry,
        )
        self.batch_images = Histogram(
            "lookalike_indexer_batch_images",
            "Photos embedded together in one forward pass.",
            buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.embed_seconds = Histogram(
            "lookalike_indexer_embed_duration_seconds",
            "Time of one forward pass of the worker's micro-batcher.",
            buckets=EMBED_BUCKETS,
            registry=self.registry,
        )
        self.freshness = Histogram(
            "lookalike_indexer_freshness_seconds",
            "From the event's occurred_at to the store acknowledging its write (searchable, "
            "or gone from search for a deletion).",
            buckets=FRESHNESS_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(self))

    def observe_pass(self, photos: int, seconds: float) -> None:
        """One forward pass of the worker's micro-batcher."""
        self.batch_images.observe(photos)
        self.embed_seconds.observe(seconds)

    def count(self, outcome: Outcome, n: int = 1) -> None:
        self.events.labels(outcome).inc(n)

    def dead_lettered(self, reason: str, stage: str) -> None:
        """One event sent to the dead-letter topic (an outcome, and a reason)."""
        self.count("dead_lettered")
        self.dead_letters.labels(reason, stage).inc()

    def events_total(self, outcome: Outcome) -> float:
        """How many events ended with `outcome` so far (tests, benchmarks)."""
        value = self.registry.get_sample_value(
            "lookalike_indexer_events_total", {"outcome": outcome}
        )
        return value or 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metric_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name `registry` can expose (counters' _total, histograms' _bucket/_sum/_count),
    whether or not it has samples yet: what a dashboard query may refer to."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
        "summary": ("", "_sum", "_count", "_created"),
    }
    names: set[str] = set()
    for collector in list(registry._collector_to_names):
        describe = getattr(collector, "describe", None)
        families = describe() if describe is not None else collector.collect()
        for family in families:
            names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names
