"""`lookalike publish`: read a whole file of listing events, validate every line, then send.

JSON lines: one event per line, as on the topic. CSV: a header row, then one event per row:

| column | event field |
| --- | --- |
| `type` | `type` (`listing.upserted` when empty or absent) |
| `listing_id`, `version`, `occurred_at` | the same fields |
| `state`, `title`, `category`, `shop_id` | the same fields (upserts) |
| `price_amount`, `price_currency` | `price.amount`, `price.currency` |
| `image_urls` | `images[].url`, the URLs separated by spaces |

Empty cells are absent fields; other columns are ignored, as unknown JSON fields are.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from models.events import ListingDeleted, ListingUpserted, encode_event, event_key, parse_event
from stream.broker import (
    PLAINTEXT,
    Security,
    check_reachable,
    create_topics,
    quiet_client_config,
)
from stream.publisher import ListingPublisher

Format = Literal["jsonl", "csv"]
CSV_COLUMNS = (
    "type",
    "listing_id",
    "version",
    "occurred_at",
    "state",
    "title",
    "category",
    "shop_id",
    "price_amount",
    "price_currency",
    "image_urls",
)
# The reachability check leaves room, within 15 s, for reading the topic list and creating it.
CONNECT_TIMEOUT_S = 8.0


@dataclass(frozen=True)
class BadLine:
    lineno: int
    reason: str


@dataclass
class Batch:
    """A validated file: the encoded events, ready to send, and the lines that failed."""

    events: list[tuple[bytes, bytes]] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)
    # The same events parsed, in the same order (backfill writes them without parsing again).
    parsed: list[ListingUpserted | ListingDeleted] = field(default_factory=list)


def file_format(path: Path, given: str | None) -> Format:
    """`--format`, else by extension: .csv is CSV, anything else JSON lines."""
    if given is not None:
        return "csv" if given == "csv" else "jsonl"
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def _jsonl(path: Path) -> Iterator[tuple[int, bytes | BadLine]]:
    with path.open("rb") as lines:
        for lineno, line in enumerate(lines, start=1):
            if line.strip():
                yield lineno, line


def csv_row_event(row: dict[str, str | None]) -> dict[str, Any]:
    """A CSV row as the JSON event it stands for (see the module docstring)."""
    cells = {k.strip(): v.strip() for k, v in row.items() if k and v is not None and v.strip()}
    event: dict[str, Any] = {"type": cells.get("type", "listing.upserted")}
    for name in ("listing_id", "occurred_at", "state", "title", "category", "shop_id"):
        if name in cells:
            event[name] = cells[name]
    if "version" in cells:
        version = cells["version"]
        event["version"] = int(version) if version.isdigit() else version
    if "price_amount" in cells or "price_currency" in cells:
        event["price"] = {
            k: cells[c]
            for k, c in (("amount", "price_amount"), ("currency", "price_currency"))
            if c in cells
        }
    if "image_urls" in cells:
        event["images"] = [{"url": url} for url in cells["image_urls"].split()]
    return event


def _csv(path: Path) -> Iterator[tuple[int, bytes | BadLine]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        start = reader.line_num + 1
        for row in reader:
            # A quoted cell may span lines: a row is numbered by the line it starts on.
            lineno, start = start, reader.line_num + 1
            if None in row:
                yield lineno, BadLine(lineno, "more cells than the header has columns")
                continue
            yield lineno, json.dumps(csv_row_event(row)).encode()


def read_events(path: Path, fmt: Format, on_line: Callable[[], object] | None = None) -> Batch:
    """Every line of the file, validated as an event; nothing is sent."""
    batch = Batch()
    lines = _csv(path) if fmt == "csv" else _jsonl(path)
    for lineno, value in lines:
        if on_line is not None:
            on_line()
        if isinstance(value, BadLine):
            batch.bad.append(value)
            continue
        try:
            event = parse_event(value)
        except ValueError as exc:
            batch.bad.append(BadLine(lineno, str(exc)))
            continue
        batch.events.append((event_key(event), encode_event(event)))
        batch.parsed.append(event)
    return batch


def count_lines(path: Path) -> int:
    """Lines of the file, for the validation progress bar (fast: no decoding)."""
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def validate(path: Path, fmt: Format, progress: bool = True) -> Batch:
    with tqdm(
        total=count_lines(path), desc="validate", unit="line", leave=False, disable=not progress
    ) as bar:
        return read_events(path, fmt, on_line=lambda: bar.update(1))


def send(
    events: list[tuple[bytes, bytes]],
    bootstrap: str,
    topic: str,
    partitions: int,
    progress: bool = True,
    security: Security = PLAINTEXT,
) -> int:
    """Send the events (queued without waiting for each acknowledgement), then wait for all;
    raise BrokerUnreachable first when nobody answers at `bootstrap`."""
    check_reachable(bootstrap, CONNECT_TIMEOUT_S, security)
    # Publishers never create topics by accident (with the broker's partition count).
    create_topics(bootstrap, {topic: partitions}, timeout_s=5.0, security=security)
    with (
        tqdm(total=len(events), desc="publish", unit="event", disable=not progress) as bar,
        ListingPublisher(
            bootstrap,
            topic=topic,
            on_delivered=bar.update,
            # Larger batches than the live publisher's: a backfill is about throughput.
            **{"linger.ms": 20, "batch.size": 1_000_000},
            **security,
            **quiet_client_config(),
        ) as publisher,
    ):
        for key, value in events:
            publisher.publish_raw(key, value)
        publisher.flush(timeout_s=120.0)
        return publisher.delivered


def format_bad(path: Path, bad: list[BadLine]) -> str:
    """Every bad line, as `FILE:LINE: reason`."""
    return "\n".join(f"{path}:{b.lineno}: {b.reason}" for b in bad)
