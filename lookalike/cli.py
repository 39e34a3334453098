"""`lookalike`: the command line of the production processes and operator tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _cmd_worker(args: argparse.Namespace) -> int:
    from stream.__main__ import main as worker_main

    worker_main()
    return 0


def _cmd_api(args: argparse.Namespace) -> int:
    from query.serve import run_api
    from query.settings import ApiSettings

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    run_api(ApiSettings(**overrides))
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from models.events import parse_event
    from models.settings import BrokerSettings
    from stream.publisher import ListingPublisher

    broker = BrokerSettings()
    bootstrap = args.broker or broker.broker
    lines = [line for line in args.file.read_bytes().splitlines() if line.strip()]
    with ListingPublisher(bootstrap, topic=args.topic or broker.topic) as publisher:
        for lineno, line in enumerate(tqdm(lines, desc="publish", unit="event"), start=1):
            try:
                publisher.publish(parse_event(line))
            except ValueError as exc:
                print(f"{args.file}:{lineno}: {exc}", file=sys.stderr)
                return 2
        publisher.flush()
    print(f"published {len(lines)} events to {bootstrap}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookalike",
        description="Search by photo for marketplaces. Settings come from LOOKALIKE_* variables.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run one indexer worker (Faust) against the broker")
    worker.set_defaults(func=_cmd_worker)

    api = sub.add_parser("api", help="run the query service")
    api.add_argument("--host", default=None, help="listen address (LOOKALIKE_HOST)")
    api.add_argument("--port", type=int, default=None, help="listen port (LOOKALIKE_PORT)")
    api.set_defaults(func=_cmd_api)

    publish = sub.add_parser("publish", help="publish listing events from a JSON-lines file")
    publish.add_argument("file", type=Path, help="one listing event (JSON) per line")
    publish.add_argument("--broker", default=None, help="bootstrap servers (LOOKALIKE_BROKER)")
    publish.add_argument("--topic", default=None, help="topic (LOOKALIKE_TOPIC)")
    publish.set_defaults(func=_cmd_publish)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
