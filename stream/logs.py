"""Structured logging: one JSON object per line, through structlog."""

from __future__ import annotations

import logging
import sys

import structlog


class _CurrentStderr:
    """Whatever sys.stderr is at each write. A logger bound to the stream at configuration time
    keeps writing to it after it was replaced and closed (a test runner's capture, a daemon's
    redirection); this one follows."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "INFO") -> None:
    """Send structlog and stdlib logging to stderr as JSON lines."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
