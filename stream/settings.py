"""Settings of the streaming indexer worker, read from LOOKALIKE_* environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.settings import (
    ENV_PREFIX,
    BrokerSettings,
    FetchSettings,
    ImageSettings,
    ModelSettings,
    StoreSettings,
)


class StreamSettings(BaseSettings):
    """How the worker consumes, batches and schedules index maintenance."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # The Faust app id: also the consumer group id.
    group_id: str = "lookalike-indexer"
    # Events being processed at once (each listing in its own lane); the stream waits beyond it.
    max_in_flight: int = Field(default=256, ge=1, le=100_000)
    # Every photo of one listing must be fetched and decoded within this, all together.
    fetch_deadline_s: float = Field(default=15.0, gt=0)
    # Rounds through the retry topic for a listing whose photos failed only transiently
    # (timeouts, 5xx, connection errors) before it goes to the dead-letter topic.
    max_retries: int = Field(default=2, ge=0, le=20)
    # Delay before the first retry round; it doubles each round.
    retry_delay_s: float = Field(default=10.0, ge=0)
    # Longest pause between two tries of an unreachable store or broker (retried forever).
    infra_backoff_max_s: float = Field(default=5.0, gt=0)
    # How long a deleted or non-active listing's tombstone keeps its version; an event older
    # than the tombstone that arrives after it was purged would apply again.
    tombstone_retention_days: float = Field(default=30.0, gt=0)
    purge_every_s: float = Field(default=3600.0, gt=0)
    # Threads that decode images (Pillow releases the GIL while decoding).
    decode_threads: int = Field(default=2, ge=1, le=64)
    # Broker group timings: Tansu completes a JoinGroup only after the session timeout.
    session_timeout_s: float = Field(default=6.0, gt=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    max_poll_interval_s: float = Field(default=10.0, gt=0)
    commit_interval_s: float = Field(default=1.0, gt=0)
    # Build the store's search index after this many writes, once the worker was idle this long.
    optimize_after_writes: int = Field(default=1000, ge=1)
    optimize_idle_s: float = Field(default=30.0, gt=0)
    optimize_check_every_s: float = Field(default=5.0, gt=0)
    # How often the worker looks for events Faust dropped around a rebalance (see stream.offsets).
    hole_check_every_s: float = Field(default=5.0, gt=0)
    # The worker's own /healthz, /readyz and /metrics (stream.status); unset: not served. Faust's
    # web server is never started.
    worker_port: int | None = Field(default=None, ge=0, le=65535)
    worker_host: str = "127.0.0.1"
    # /readyz: with nothing in flight, the broker must have answered a fetch within this ...
    ready_poll_stale_s: float = Field(default=8.0, gt=0)
    # ... and with events in flight, one must have finished within this: longer than
    # fetch_deadline_s, so that one listing waiting on a hung photo host is not a stall.
    ready_stall_s: float = Field(default=20.0, gt=0)
    # Where Faust keeps its local state (table directory).
    data_dir: str = "data/worker"


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker process needs, built once in its entry point."""

    stream: StreamSettings = field(default_factory=StreamSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    images: ImageSettings = field(default_factory=ImageSettings)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
