"""Prometheus metrics of one app, in a registry of its own (several apps may share a process)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)


class ApiMetrics:
    """Request latency by route and status, embed batch sizes and time, store latency, and what
    admission control shed."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "lookalike_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.embed_batch_size = Histogram(
            "lookalike_embed_batch_size",
            "Photos embedded together in one forward pass by the micro-batcher.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.embed_seconds = Histogram(
            "lookalike_embed_duration_seconds",
            "Time of one micro-batch forward pass.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "lookalike_store_duration_seconds",
            "Time of one vector-store call, by operation and outcome.",
            ["operation", "outcome"],
            buckets=STORE_BUCKETS,
            registry=self.registry,
        )

        self.shed = Counter(
            "lookalike_http_shed",
            "Searches refused with 503 overloaded, by stage: on arrival (the queue was already "
            "over budget), at admission (this photo would not start in time) or in the queue "
            "(its turn came after its deadline).",
            ["stage"],
            registry=self.registry,
        )
        self.queue_delay = Gauge(
            "lookalike_admission_queue_delay_seconds",
            "Predicted wait of a search arriving now before its photo starts decoding or "
            "embedding.",
            registry=self.registry,
        )
        self.image_url_failures = Counter(
            "lookalike_image_url_failures",
            "image_url fetches that failed, by reason (clients see one generic code).",
            ["reason"],
            registry=self.registry,
        )

    def observe_pass(self, photos: int, seconds: float) -> None:
        """One forward pass of the micro-batcher."""
        self.embed_batch_size.observe(photos)
        self.embed_seconds.observe(seconds)

    @contextmanager
    def store_timer(self, operation: str) -> Iterator[None]:
        """Time a store call; failures are recorded too, under outcome="error"."""
        start = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        finally:
            self.store_seconds.labels(operation, outcome).observe(time.perf_counter() - start)

    def exposition(self) -> bytes:
        """The text exposition format of everything in this registry."""
        return generate_latest(self.registry)
