"""Structured logging for every process: one JSON object per line on stderr, structlog's events
and the standard library's (Faust, aiokafka, aiohttp, OpenVINO) alike."""

from __future__ import annotations

import logging
import sys

import structlog
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.settings import ENV_PREFIX

# The root logger's handler that configure_logging installs, found again by this name.
HANDLER_NAME = "lookalike"


class LogSettings(BaseSettings):
    """How much each process logs."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    # lookalike's own events.
    log_level: str = "INFO"
    # Faust, aiokafka and aiohttp log through the standard library: their INFO is a firehose.
    library_log_level: str = "WARNING"


class _CurrentStderr:
    """Whatever sys.stderr is at each write: a stream bound at configuration time is written to
    after it was replaced and closed (a daemon's redirection, a test runner's capture)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(settings: LogSettings) -> None:
    """Send structlog and the standard library's logging to stderr as JSON lines. Called again,
    it replaces its own handler rather than adding a second one."""
    stamp: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    stderr = _CurrentStderr()
    structlog.configure(
        processors=[*stamp, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(settings.log_level.upper())
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stderr),  # type: ignore[arg-type]
        # A cached logger keeps this configuration for good: a later configure (an embedding
        # program's, structlog.testing.capture_logs) would not reach it. Logs are per event, not
        # per photo, so the few microseconds a bind costs do not show.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stderr)
    handler.name = HANDLER_NAME
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *stamp],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.name == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.library_log_level.upper())
