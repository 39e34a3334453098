"""Fixtures shared by the whole suite."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

from models.logs import HANDLER_NAME
from tests.imageserver import ImageServer, serve_images


@pytest.fixture
async def image_server() -> AsyncIterator[ImageServer]:
    """A real HTTP image server on loopback, fresh for each test."""
    async with serve_images() as server:
        yield server


@pytest.fixture(autouse=True)
def _structlog_as_found() -> Iterator[None]:
    """A command run in-process configures the process's logging: undone after each test."""
    root = logging.getLogger()
    level = root.level
    yield
    structlog.reset_defaults()
    for handler in [h for h in root.handlers if h.name == HANDLER_NAME]:
        root.removeHandler(handler)
    root.setLevel(level)


# --- stream: a real Tansu broker, one per test module --------------------------------------------

from stream.broker import DevBroker  # noqa: E402


@pytest.fixture(scope="module")
def broker() -> Iterator[DevBroker]:
    """A real Tansu broker on a free loopback port, shared by one test module (in-memory data)."""
    with DevBroker() as started:
        yield started
