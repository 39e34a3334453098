"""Prometheus metrics counted by the indexer worker, in a registry of its own."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

Outcome = Literal["indexed", "payload_only", "deleted", "stale", "retried", "dead_lettered"]
OUTCOMES: tuple[Outcome, ...] = (
    "indexed",
    "payload_only",
    "deleted",
    "stale",
    "retried",
    "dead_lettered",
)


@dataclass
class WorkerMetrics:
    """Counters and histograms of one worker process; `render()` is the Prometheus text format."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.events = Counter(
            "lookalike_indexer_events",
            "Listing events handled, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.events.labels(outcome)
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
        self.lag = Histogram(
            "lookalike_indexer_lag_seconds",
            "From the event's occurred_at to the store acknowledging its write.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
            registry=self.registry,
        )

    def observe_pass(self, photos: int, seconds: float) -> None:
        """One forward pass of the worker's micro-batcher."""
        self.batch_images.observe(photos)

    def count(self, outcome: Outcome, n: int = 1) -> None:
        self.events.labels(outcome).inc(n)

    def events_total(self, outcome: Outcome) -> float:
        """How many events ended with `outcome` so far (tests, benchmarks)."""
        value = self.registry.get_sample_value(
            "lookalike_indexer_events_total", {"outcome": outcome}
        )
        return value or 0.0

    def render(self) -> bytes:
        return generate_latest(self.registry)
