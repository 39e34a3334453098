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
