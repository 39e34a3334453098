"""`python -m query`: the query service, configured from LOOKALIKE_* environment variables."""

from __future__ import annotations

from models.logs import LogSettings, configure_logging
from query.serve import run_api
from query.settings import ApiSettings


def main() -> None:
    configure_logging(LogSettings())
    run_api(ApiSettings())


if __name__ == "__main__":
    main()
