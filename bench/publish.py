"""Backfill rate of `lookalike publish`: 100k listing events from a file into a Tansu broker."""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from bench.results import save
from lookalike.publish import send, validate
from models.events import ImageRef, ListingUpserted, Price, encode_event
from stream.broker import DevBroker

DEFAULT_OUT = Path(__file__).parent / "results" / "publish.json"


def write_catalog(path: Path, n: int) -> int:
    """n listing events of two photos each, one JSON line per event; returns the file's bytes."""
    now = datetime.now(UTC)
    with path.open("wb") as f:
        for i in range(n):
            event = ListingUpserted(
                listing_id=f"B{i:06d}",
                version=1,
                occurred_at=now,
                state="active",
                title=f"Hand-thrown speckled mug no. {i}",
                category="home_and_living/kitchen/mugs",
                price=Price(amount=Decimal("24.00"), currency="USD"),
                shop_id=f"S{i % 500}",
                images=[ImageRef(url=f"https://img.example/B{i}/{k}.jpg") for k in range(2)],
            )
            f.write(encode_event(event) + b"\n")
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, DevBroker() as broker:
        path = Path(scratch) / "catalog.jsonl"
        size = write_catalog(path, args.events)
        started = time.perf_counter()
        batch = validate(path, "jsonl", progress=False)
        validated = time.perf_counter()
        sent = send(batch.events, broker.bootstrap, "listings", args.partitions, progress=False)
        ended = time.perf_counter()
    assert sent == args.events and not batch.bad
    result = {
        "events": sent,
        "file_mb": round(size / 1e6, 1),
        "validate_s": round(validated - started, 2),
        "send_s": round(ended - validated, 2),
        "validate_events_per_s": round(sent / (validated - started)),
        "send_events_per_s": round(sent / (ended - validated)),
        "end_to_end_events_per_s": round(sent / (ended - started)),
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print("| metric | value |\n| --- | ---: |")
    for key, value in result.items():
        print(f"| {key} | {value} |")
    save(args.out, result)


if __name__ == "__main__":
    main()
