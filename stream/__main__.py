"""`python -m stream`: run one indexer worker with settings from LOOKALIKE_* variables."""

from __future__ import annotations

from models.logs import LogSettings, configure_logging
from stream.settings import WorkerSettings
from stream.worker import run_worker


def main() -> None:
    logs = LogSettings()
    configure_logging(logs)
    run_worker(WorkerSettings(), loglevel=logs.log_level.upper())


if __name__ == "__main__":
    main()
