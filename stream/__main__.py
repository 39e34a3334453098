"""`python -m stream`: run one indexer worker with settings from LOOKALIKE_* variables."""

from __future__ import annotations

import logging
import os

from stream.logs import configure_logging
from stream.settings import WorkerSettings
from stream.worker import run_worker


def main() -> None:
    level = os.environ.get("LOOKALIKE_LOG_LEVEL", "INFO").upper()
    configure_logging(level)
    # Faust and aiokafka log through the standard library: their INFO is a firehose.
    library_level = os.environ.get("LOOKALIKE_LIBRARY_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(
        level=library_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    run_worker(WorkerSettings(), loglevel=level)


if __name__ == "__main__":
    main()
