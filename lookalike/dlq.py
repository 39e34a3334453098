"""`lookalike dlq`: list, show and replay the indexer's dead letters.

Replays are recorded on a ledger topic beside the dead letters (`<dlq topic>.replayed`, one
message per replayed dead letter, keyed `partition:offset`), so a dead letter is replayed at most
once whatever the filters of each run: one that `--reason` or `--since` left out stays replayable
by a later run. A consumer group's committed offset could not say that: it is one position per
partition, so it would either pass over the dead letters a filter left out for good, or replay
again the ones after them. The ledger is written after the broker acknowledged the replayed
events; a replay interrupted in between sends them again next time, which changes nothing in the
index (the store applies an event only over an older version).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Message, Producer
from tqdm import tqdm

from models.settings import BrokerSettings
from stream.broker import (
    BrokerError,
    Security,
    create_topics,
    quiet_client_config,
    read_to_end,
)
from stream.publisher import ListingPublisher

# Headers the worker adds; a replay sends the producer's own ones and says what it replays.
WORKER_HEADERS = ("dlq.", "retry.", "origin.", "replay.")
REPLAY_HEADER = "replay.of"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def ledger_topic(dlq_topic: str) -> str:
    """The topic that records which dead letters were replayed."""
    return f"{dlq_topic}.replayed"


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: an ISO 8601 time (UTC when it has no offset) or a duration back from now such
    as 30m, 2h or 7d."""
    now = now or datetime.now(UTC)
    duration = _DURATION.match(text.strip())
    if duration is not None:
        amount, unit = duration.groups()
        return now - timedelta(**{_UNITS[unit]: float(amount)})
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(
            f"--since {text!r} is neither an ISO 8601 time nor a duration such as 30m, 2h, 7d"
        ) from exc
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class DeadLetter:
    """One message of the DLQ topic: the original key and value, and why it was dead-lettered."""

    partition: int
    offset: int
    timestamp: datetime | None
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def of(cls, msg: Message) -> DeadLetter:
        kind, ms = msg.timestamp()
        got = msg.headers() or []
        raw = list(got.items()) if isinstance(got, dict) else list(got)
        headers = tuple((k, v.encode() if isinstance(v, str) else bytes(v or b"")) for k, v in raw)
        return cls(
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            timestamp=datetime.fromtimestamp(ms / 1000, UTC) if kind and ms > 0 else None,
            key=msg.key(),
            value=msg.value() or b"",
            headers=headers,
        )

    @property
    def ref(self) -> str:
        """How `dlq show` names it: the offset, prefixed by its partition beyond the first."""
        return str(self.offset) if self.partition == 0 else f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str:
        for k, v in self.headers:
            if k == name:
                return v.decode(errors="replace")
        return ""

    @property
    def reason(self) -> str:
        return self.header("dlq.reason")

    @property
    def listing(self) -> str:
        return self.key.decode(errors="replace") if self.key is not None else ""

    def replay_headers(self, dlq_topic: str) -> list[tuple[str, str | bytes | None]]:
        own: list[tuple[str, str | bytes | None]] = [
            (k, v) for k, v in self.headers if not k.startswith(WORKER_HEADERS)
        ]
        return [*own, (REPLAY_HEADER, f"{dlq_topic}:{self.partition}:{self.offset}".encode())]

    def as_json(self, replayed: bool) -> dict[str, Any]:
        try:
            value: Any = json.loads(self.value)
        except ValueError:
            value = self.value.decode(errors="replace")
        return {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z")
            if self.timestamp
            else None,
            "key": self.listing if self.key is not None else None,
            "reason": self.reason,
            "stage": self.header("dlq.stage"),
            "attempts": int(self.header("dlq.attempts") or 0),
            "detail": self.header("dlq.detail"),
            "replayed": replayed,
            "headers": {k: v.decode(errors="replace") for k, v in self.headers},
            "value": value,
        }


@dataclass(frozen=True)
class Filters:
    """Which dead letters a command looks at: by reason, and no older than `since`."""

    reason: str | None = None
    since: datetime | None = None

    def match(self, letter: DeadLetter) -> bool:
        if self.reason is not None and letter.reason != self.reason:
            return False
        if self.since is not None:
            return letter.timestamp is not None and letter.timestamp >= self.since
        return True


def _ref(partition: int, offset: int) -> str:
    return f"{partition}:{offset}"


def read_dead_letters(bootstrap: str, broker: BrokerSettings) -> list[DeadLetter]:
    """Every dead letter on the DLQ topic, oldest first per partition."""
    messages = read_to_end(bootstrap, broker.dlq_topic, security=broker.client_security())
    return [DeadLetter.of(m) for m in messages]


def replayed(bootstrap: str, broker: BrokerSettings) -> set[str]:
    """`partition:offset` of every dead letter replayed so far (the ledger topic)."""
    try:
        messages = read_to_end(
            bootstrap, ledger_topic(broker.dlq_topic), security=broker.client_security()
        )
    except BrokerError:
        return set()  # no ledger yet: nothing was replayed
    return {key.decode() for key in (m.key() for m in messages) if key}


def find(letters: Iterable[DeadLetter], ref: str) -> DeadLetter | None:
    """The dead letter named OFFSET (partition 0) or PARTITION:OFFSET."""
    partition, _, offset = ref.rpartition(":")
    try:
        wanted = (int(partition or 0), int(offset))
    except ValueError:
        return None
    return next((x for x in letters if (x.partition, x.offset) == wanted), None)


@dataclass
class ReplayReport:
    """What a replay did: `replayed` were sent (or would be, on a dry run)."""

    replayed: list[DeadLetter] = field(default_factory=list)
    already: int = 0
    left_out: int = 0
    dry_run: bool = False


def replay(
    bootstrap: str, broker: BrokerSettings, filters: Filters, dry_run: bool = False
) -> ReplayReport:
    """Republish the matching dead letters not replayed before to the listings topic, then
    record them on the ledger."""
    letters = read_dead_letters(bootstrap, broker)
    done = replayed(bootstrap, broker)
    report = ReplayReport(dry_run=dry_run)
    for letter in letters:
        if not filters.match(letter):
            report.left_out += 1
        elif _ref(letter.partition, letter.offset) in done:
            report.already += 1
        else:
            report.replayed.append(letter)
    if dry_run or not report.replayed:
        return report
    ledger = ledger_topic(broker.dlq_topic)
    # The publisher never creates the topic by accident; replay creates the ledger on purpose.
    security = broker.client_security()
    create_topics(bootstrap, {broker.topic: broker.topic_partitions, ledger: 1}, security=security)
    client: dict[str, Any] = {**security, **quiet_client_config()}
    with (
        ListingPublisher(bootstrap, broker.topic, **client) as publisher,
        tqdm(total=len(report.replayed), desc="replay", unit="event", leave=False) as bar,
    ):
        for letter in report.replayed:
            publisher.publish_raw(letter.key, letter.value, letter.replay_headers(broker.dlq_topic))
            bar.update(1)
        publisher.flush()
    _record(bootstrap, ledger, report.replayed, security)
    return report


def _record(bootstrap: str, ledger: str, letters: Sequence[DeadLetter], security: Security) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            **security,
            "enable.idempotence": True,
            "allow.auto.create.topics": False,
            **quiet_client_config(),
        }
    )
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    for letter in letters:
        value = json.dumps({"replayed_at": now, "reason": letter.reason, "key": letter.listing})
        producer.produce(ledger, key=_ref(letter.partition, letter.offset), value=value.encode())
        producer.poll(0)
    if producer.flush(30.0):
        raise BrokerError(f"the broker did not acknowledge the replay record on {ledger}")


def format_list(letters: Sequence[DeadLetter], done: set[str]) -> str:
    """One line per dead letter, for a terminal."""
    if not letters:
        return "no dead letters"
    rows = [("OFFSET", "TIME (UTC)", "REASON", "STAGE", "TRIES", "KEY", "REPLAYED", "DETAIL")]
    for x in letters:
        when = x.timestamp.strftime("%Y-%m-%d %H:%M:%S") if x.timestamp else "-"
        detail = x.header("dlq.detail").replace("\n", " ")
        rows.append(
            (
                x.ref,
                when,
                x.reason or "-",
                x.header("dlq.stage") or "-",
                x.header("dlq.attempts") or "-",
                x.listing or "-",
                "yes" if _ref(x.partition, x.offset) in done else "no",
                detail[:80] + ("…" if len(detail) > 80 else ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )
