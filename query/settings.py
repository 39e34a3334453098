"""Settings of the query service, read from LOOKALIKE_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.settings import ENV_PREFIX, FetchSettings, ImageSettings, ModelSettings, StoreSettings

MAX_K = 100
# Calibrated by `python -m bench.calibrate` (see the README's Search quality section).
RELEVANCE_THRESHOLD = 0.86


class ApiSettings(BaseSettings):
    """Everything the API process needs; the shared settings classes are composed, not copied."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Whole multipart body; a little over the image limit so the image limit is what bites first.
    max_upload_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # base64 grows an image by 4/3, so the JSON limit sits above the image limit by that much.
    max_json_bytes: int = Field(default=21 * 1024 * 1024, ge=1024)
    default_k: int = Field(default=24, ge=1, le=MAX_K)
    # The score from which results are relevant at >= 80% precision on the evaluation catalog
    # (bench/calibrate.py); served at /v1/config, where the page draws its "less similar" line.
    relevance_threshold: float = Field(default=RELEVANCE_THRESHOLD, ge=-1, le=1)
    # Micro-batching of concurrent searches: at most this many photos per forward pass. None: 4
    # on a CPU (the best images/s on 2 cores; larger batches are slower per image there), the
    # model's embed_batch_size on a GPU ...
    batch_max_size: int | None = Field(default=None, ge=1, le=1024)
    # ... and at most this long spent waiting for photos that are still being decoded.
    batch_max_wait_ms: float = Field(default=4.0, ge=0, le=1000)
    # Decoders of uploads; decoding never runs on the event loop ...
    decode_threads: int = Field(default=2, ge=1, le=64)
    # ... and runs in that many processes rather than threads, so that a codec holding the GIL
    # cannot stall the event loop (query/app.py).
    decode_processes: bool = True
    # /readyz gives the store this long to answer.
    ready_timeout_s: float = Field(default=2.0, gt=0)
    # Admission control: a search whose photo could not start decoding and embedding within
    # this long is refused at once with 503 overloaded (query/admission.py).
    queue_budget_ms: float = Field(default=1000.0, gt=0, le=60_000)
    # The API's own pixel limit, apart from the indexer's: a 12 MP phone photo passes, and so
    # does the usual 12 MP output of a 48 MP sensor.
    api_max_image_pixels: int = Field(default=24_000_000, ge=1)
    # The whole of one image_url fetch, redirects and its one retry included.
    image_url_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # Set to serve /metrics on this port instead of the public one (compose does).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)

    embedding: ModelSettings = Field(default_factory=ModelSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
