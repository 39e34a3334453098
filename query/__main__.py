"""`python -m query`: the query service, configured from LOOKALIKE_* environment variables."""

from __future__ import annotations

from query.serve import run_api
from query.settings import ApiSettings


def main() -> None:
    run_api(ApiSettings())


if __name__ == "__main__":
    main()
