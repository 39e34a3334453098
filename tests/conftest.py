"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.imageserver import ImageServer, serve_images


@pytest.fixture
async def image_server() -> AsyncIterator[ImageServer]:
    """A real HTTP image server on loopback, fresh for each test."""
    async with serve_images() as server:
        yield server


# --- stream: a real Tansu broker, one per test module --------------------------------------------

from collections.abc import Iterator  # noqa: E402

from stream.broker import DevBroker  # noqa: E402


@pytest.fixture(scope="module")
def broker() -> Iterator[DevBroker]:
    """A real Tansu broker on a free loopback port, shared by one test module (in-memory data)."""
    with DevBroker() as started:
        yield started
