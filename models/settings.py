"""Settings shared by every process, read from LOOKALIKE_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "LOOKALIKE_"


class ModelSettings(BaseSettings):
    """Which embedding model to run and where."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # A name from models.network.VARIANTS: the ImageNet weights served without a checkpoint (a
    # checkpoint names its own variant and preprocessing).
    model_name: str = "efficientnet-lite0"
    # A fine-tuned checkpoint exported by `lookalike train`; None means the ImageNet weights.
    model_checkpoint: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Largest batch one forward pass takes; ~4 is best on 2 CPU cores, far more on a GPU.
    embed_batch_size: int = Field(default=8, ge=1, le=1024)
    # CPU threads torch may use per forward pass; None: the CPUs shared out between the streams.
    torch_threads: int | None = Field(default=None, ge=1)
    # Forward passes that may run at once on the CPU, each on its own thread; None: 2 when there
    # are 2 or more CPUs (measured faster than one pass on 2 threads), always 1 on a GPU.
    embed_streams: int | None = Field(default=None, ge=1, le=64)
    # Run a frozen TorchScript trace (BatchNorm folded, no Python between operators): faster.
    torchscript: bool = True
    # auto: OpenVINO on a CPU, torch on CUDA. torch always stays the fallback.
    runtime: Literal["auto", "torch", "openvino"] = "auto"
    # auto: bf16 on a CPU with AMX under OpenVINO, fp16 on CUDA, else fp32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Exported models (OpenVINO IR and compiled blobs), one directory per model_id.
    model_cache_dir: Path = Path("data/models")


class ImageSettings(BaseSettings):
    """Limits applied to every image before its pixels are decoded."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    max_image_bytes: int = Field(default=15 * 1024 * 1024, ge=1024)
    # Decompression bombs are refused by header dimensions before any pixel is decoded.
    max_image_pixels: int = Field(default=40_000_000, ge=1)


class FetchSettings(BaseSettings):
    """How images are fetched over HTTP by the worker and by the API's image_url."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    fetch_connect_timeout_s: float = Field(default=3.0, gt=0)
    fetch_read_timeout_s: float = Field(default=10.0, gt=0)
    fetch_retries: int = Field(default=2, ge=0, le=10)
    fetch_backoff_s: float = Field(default=0.2, ge=0)
    fetch_per_host_limit: int = Field(default=8, ge=1)
    fetch_max_redirects: int = Field(default=3, ge=0)
    # Off by default: loopback/private/link-local hosts are an SSRF target. The dev stack turns
    # it on for its own loopback image server.
    allow_private_image_hosts: bool = False


class StoreSettings(BaseSettings):
    """Where the vectors live: Qdrant Edge on disk (default) or a Qdrant server."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # Set to use the Qdrant server backend; ":memory:" selects qdrant-client's local mode (tests).
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    index_path: Path = Path("data/index")
    # The name every reader uses; it points at "<alias>__<model_id>".
    collection_alias: str = "listings"
    # Vectors compressed in memory (Qdrant's own scalar or binary quantization), the originals
    # kept to rescore the top `quantization_oversampling` x k candidates (models/store/layout.py).
    quantization: Literal["none", "int8", "binary"] = "none"
    quantization_oversampling: float = Field(default=2.0, ge=1.0, le=16.0)
    # Original vectors, payloads and payload indexes on disk (memory-mapped) rather than in RAM;
    # payload indexes keep the setting their collection was created with.
    store_on_disk: bool = False
    # Candidates the HNSW graph walk keeps per search (recall against speed). 256: filtered
    # recall@10 0.97 at 100k listings where the engine's default (100) gave 0.87 (bench.scale).
    hnsw_ef: int | None = Field(default=256, ge=4, le=4096)
    # ACORN: the graph walk also looks two hops out past listings the filters reject, which
    # keeps filtered searches from missing results; used when the filters pass few listings.
    acorn: bool = False
    # A new collection on a Qdrant server (or cluster): shards, copies of each, and how many
    # copies must acknowledge a write.
    shard_number: int = Field(default=1, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    write_consistency_factor: int = Field(default=1, ge=1, le=16)
    # A listing whose photos score at least this against a live listing's (the search score,
    # cosine) joins its duplicate group; calibrated by bench.calibrate, per model. None: off.
    duplicate_threshold: float | None = Field(default=0.96, ge=-1.0, le=1.0)


class BrokerSettings(BaseSettings):
    """The Kafka-protocol broker and topics."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    broker: str = "localhost:9092"
    topic: str = "listings"
    dlq_topic: str = "listings.dlq"
    # Listings whose photos failed only transiently wait here for another try.
    retry_topic: str = "listings.retry"
    topic_partitions: int = Field(default=4, ge=1)
    # How every client (the worker, publish, dlq, stats) authenticates to the broker.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # CA bundle that signed the broker's certificate; unset: the system's.
    kafka_ssl_ca_file: Path | None = None

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> BrokerSettings:
        if self.kafka_security_protocol.startswith("SASL_") and (
            not self.kafka_sasl_username or self.kafka_sasl_password is None
        ):
            raise ValueError(
                f"LOOKALIKE_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "LOOKALIKE_KAFKA_SASL_USERNAME and LOOKALIKE_KAFKA_SASL_PASSWORD"
            )
        return self

    def client_security(self) -> dict[str, str]:
        """The librdkafka settings of that authentication, for confluent-kafka clients."""
        config = {"security.protocol": self.kafka_security_protocol.lower()}
        if self.kafka_security_protocol.startswith("SASL_"):
            assert self.kafka_sasl_username is not None and self.kafka_sasl_password is not None
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_security_protocol.endswith("SSL") and self.kafka_ssl_ca_file is not None:
            config["ssl.ca.location"] = str(self.kafka_ssl_ca_file)
        return config
