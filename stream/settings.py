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

    # The Faust app id: also the consumer group id and the prefix of its table changelog topics.
    group_id: str = "lookalike-indexer"
    # Events taken from the stream at once; the embedder splits them by its own batch size.
    take_batch_size: int = Field(default=32, ge=1, le=10_000)
    # How long an idle stream waits to fill a batch before it processes what it has.
    take_within_s: float = Field(default=0.05, gt=0)
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
    # How long a failed store write is retried before the worker gives up (and crashes unacked).
    store_retry_s: float = Field(default=60.0, gt=0)
    # Faust's own web server: off by default, so workers never clash on port 6066.
    web_port: int | None = None
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
