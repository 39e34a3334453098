"""Runs the indexer app: as the process's main loop, or inside an already running event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import faust
from mode import Service

from stream.app import create_app
from stream.health import HealthPolicy, WorkerHealth
from stream.metrics import WorkerMetrics
from stream.resources import WorkerResources
from stream.settings import WorkerSettings
from stream.status import StatusServer
from stream.topics import prepare_topics


class _EmbeddedWorker(faust.Worker):
    """A Faust worker that shares a running loop: no signal handlers, no daemon wait."""

    def install_signal_handlers(self) -> None:
        # The host process owns its signals.
        return None


def _status(
    settings: WorkerSettings, health: WorkerHealth, metrics: WorkerMetrics
) -> list[Service]:
    """The worker's HTTP port, when LOOKALIKE_WORKER_PORT asks for one."""
    s = settings.stream
    if s.worker_port is None:
        return []
    return [StatusServer(health, metrics, s.worker_host, s.worker_port)]


@asynccontextmanager
async def running_worker(
    settings: WorkerSettings,
    resources: WorkerResources | None = None,
    health: WorkerHealth | None = None,
) -> AsyncIterator[faust.App]:
    """Start the indexer in this event loop (tests, the embedded dev stack); stop it on exit.
    `health` follows it (the dev stack shows it in its own /readyz)."""
    settings = await asyncio.to_thread(prepare_topics, settings)
    health = health or WorkerHealth(HealthPolicy.from_settings(settings.stream))
    metrics = resources.metrics if resources is not None else WorkerMetrics()
    app = create_app(settings, resources, health=health, metrics=metrics)
    worker = _EmbeddedWorker(
        app,
        *_status(settings, health, metrics),
        loop=asyncio.get_running_loop(),
        loglevel="WARNING",
        override_logging=False,
        redirect_stdouts=False,
        daemon=False,
        quiet=True,
    )
    worker.spinner = None  # a terminal spinner writes control bytes to stdout; logs go to stderr
    try:
        # A start that fails part-way has started the consumer already: stopped all the same.
        await worker.start()
        yield app
    finally:
        await worker.stop()


def run_worker(settings: WorkerSettings, loglevel: str = "INFO", **worker_options: Any) -> None:
    """Run the indexer until SIGINT/SIGTERM, in a fresh event loop; exits the process at the end."""
    settings = prepare_topics(settings)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    health = WorkerHealth(HealthPolicy.from_settings(settings.stream))
    metrics = WorkerMetrics()
    app = create_app(settings, health=health, metrics=metrics)
    worker = faust.Worker(
        app,
        *_status(settings, health, metrics),
        loop=loop,
        loglevel=loglevel,
        override_logging=False,
        redirect_stdouts=False,
        quiet=True,
        **worker_options,
    )
    worker.spinner = None
    worker.execute_from_commandline()
