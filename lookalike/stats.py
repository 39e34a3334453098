"""`lookalike stats`: the index (model, alias, size) and the indexer group's lag per partition.

Two things make the obvious implementation lie, and both are handled here:

- Tansu answers ListOffsets(latest) with the base offset of a partition's last record batch plus
  one, not the log end: a partition whose 60 events arrived in one batch reports a high watermark
  of 1. Its fetch responses carry the true end, so the log end is confirmed by reading from the
  reported high watermark minus one until the consumer reports the partition's end (on Kafka
  that reads one record and confirms the reported value).
- A group's committed offset past the log end belongs to another log (the broker lost its log and
  started a new one, or the topic was created again). No lag can be computed from it, so the
  partition's lag is reported as unknown, with the reason, never as 0.

Qdrant Edge lets one process open a shard, and the running service (or worker) holds it, so on
Edge the counts come from a copy of the shard's files beside the index, as `lookalike reindex`
reads its source; the copy costs disk and time in proportion to the collection, and counts what
the shard held when it was copied.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from models.settings import BrokerSettings, ModelSettings, StoreSettings
from models.store.edge import EdgeStore, copy_shard
from models.store.factory import collection_name_for, open_store, resolve_alias
from models.store.types import StoreError, VectorStore
from stream.broker import PLAINTEXT, Security

# The broker part of `stats` must end within this, however the broker misbehaves.
BROKER_BUDGET_S = 8.0
# How long the consumer waits for the end of the partitions it reads to confirm their log end.
END_PROBE_S = 3.0


class LagUnavailableError(RuntimeError):
    """The broker did not answer, or the topic is not there: nothing about lag can be said."""


@dataclass(frozen=True)
class PartitionLag:
    """How far a consumer group is behind on one partition.

    committed None: the group never committed on it. lag None: it cannot be known (see note).
    """

    partition: int
    committed: int | None
    log_start: int
    high_watermark: int
    lag: int | None
    note: str | None = None


def _quiet_logger() -> logging.Logger:
    """librdkafka's own log lines (a FAIL line per connection attempt) go nowhere: `stats` says
    what went wrong in one line of its own."""
    logger = logging.getLogger("lookalike.stats.librdkafka")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise LagUnavailableError("the broker did not answer in time")
    return left


def _confirmed_ends(
    consumer: Consumer, topic: str, starts: dict[int, tuple[int, int]], budget_s: float
) -> dict[int, int]:
    """partition -> the log end read from fetch responses, for each partition whose end the
    consumer reached within the budget (starts: partition -> (log start, reported end))."""
    consumer.assign(
        [TopicPartition(topic, p, max(low, high - 1)) for p, (low, high) in starts.items()]
    )
    ends: dict[int, int] = {}
    seen: dict[int, int] = {}
    deadline = time.monotonic() + budget_s
    try:
        while len(ends) < len(starts) and time.monotonic() < deadline:
            message = consumer.poll(min(0.2, max(deadline - time.monotonic(), 0.01)))
            if message is None:
                continue
            partition = message.partition()
            error = message.error()
            if partition is None:
                continue
            if error is None:
                offset = message.offset()
                if offset is not None:
                    seen[partition] = max(seen.get(partition, 0), offset + 1)
            elif error.code() == KafkaError._PARTITION_EOF:
                offset = message.offset()
                ends[partition] = max(offset or 0, seen.get(partition, 0))
    finally:
        consumer.unassign()
    return ends


def _lag(
    partition: int, committed: int | None, low: int, end: int, confirmed: bool
) -> PartitionLag:
    if committed is not None and committed > end:
        why = (
            f"the group committed {committed}, past the log end {end}: its offsets belong to "
            "another log (the broker lost its log, or the topic was created again)"
        )
        if not confirmed:
            why = f"the group committed {committed}, past the reported end {end}, not confirmed"
        return PartitionLag(partition, committed, low, end, None, why)
    note = None if confirmed else "log end not confirmed by a fetch; the lag may be short"
    # Never committed: the group starts from the log's start.
    lag = end - (low if committed is None else committed)
    return PartitionLag(partition, committed, low, end, lag, note)


def consumer_lag(
    bootstrap: str,
    group_id: str,
    topic: str,
    budget_s: float = BROKER_BUDGET_S,
    security: Security = PLAINTEXT,
) -> list[PartitionLag]:
    """The group's committed offsets against the confirmed log end of every partition of
    `topic` (blocking, within about `budget_s`). The group is only looked at: this consumer
    assigns partitions itself, never joins the group and never commits."""
    deadline = time.monotonic() + budget_s
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            **security,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # A stats probe must never look like a member of the group.
            "client.id": f"lookalike-stats-{uuid.uuid4().hex[:8]}",
            "socket.connection.setup.timeout.ms": 3000,
            "reconnect.backoff.max.ms": 1000,
            "logger": _quiet_logger(),
        }
    )
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=min(_remaining(deadline), 5.0))
        except KafkaException as exc:
            raise LagUnavailableError(
                f"no answer from the broker at {bootstrap} (set it with --broker or "
                "LOOKALIKE_BROKER)"
            ) from exc
        described = metadata.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            raise LagUnavailableError(
                f"topic {topic!r} does not exist on {bootstrap} (LOOKALIKE_TOPIC names it)"
            )
        partitions = [TopicPartition(topic, p) for p in sorted(described.partitions)]
        try:
            committed = consumer.committed(partitions, timeout=_remaining(deadline))
            starts: dict[int, tuple[int, int]] = {}
            for tp in partitions:
                low, high = consumer.get_watermark_offsets(tp, timeout=_remaining(deadline))
                starts[tp.partition] = (low, high)
        except KafkaException as exc:
            raise LagUnavailableError(
                f"the broker at {bootstrap} stopped answering: {exc}"
            ) from exc
        probe_s = min(END_PROBE_S, max(deadline - time.monotonic(), 0.5))
        ends = _confirmed_ends(consumer, topic, starts, probe_s)
        lags: list[PartitionLag] = []
        for tp in committed:
            low, reported = starts[tp.partition]
            offset = tp.offset if tp.offset >= 0 else None
            confirmed = tp.partition in ends
            end = max(ends.get(tp.partition, reported), reported)
            lags.append(_lag(tp.partition, offset, low, end, confirmed))
        return lags
    finally:
        consumer.close()


@dataclass(frozen=True)
class IndexStats:
    model_id: str
    dim: int
    collection: str
    alias: str
    alias_target: str | None
    listings: int | None
    active_listings: int | None
    # How the counts were read ("a copy of the shard", ...), or why they could not be.
    note: str | None = None
    # True when the counts could not be read because of a failure (not a missing collection).
    error: bool = False


async def _counts(store: VectorStore) -> tuple[int, int]:
    from models.store.types import SearchFilters

    await store.ensure_collection()
    return await store.count(None), await store.count(SearchFilters())


async def edge_counts(store: StoreSettings, name: str, dim: int) -> tuple[int, int]:
    """The counts of an Edge collection, read from a copy of its files: the original may be
    held by a running service, and a stats probe must never take the lock a worker needs."""
    # Scratch beside the index: the same filesystem, and a dot name no collection can have.
    with tempfile.TemporaryDirectory(prefix=".stats-", dir=store.index_path) as scratch:
        root = Path(scratch)
        await asyncio.to_thread(copy_shard, store.index_path, name, root)
        copy = EdgeStore(root, store.collection_alias, name, dim)
        try:
            return await _counts(copy)
        finally:
            await copy.close()


async def index_stats(store: StoreSettings, model: ModelSettings) -> IndexStats:
    """The configured model's collection: its size, and where the alias points."""
    from models.network import load_model

    net = await asyncio.to_thread(load_model, model.model_name, model.model_checkpoint)
    name = collection_name_for(store.collection_alias, net.model_id)

    def stats(
        target: str | None,
        counts: tuple[int, int] | None = None,
        note: str | None = None,
        error: bool = False,
    ) -> IndexStats:
        return IndexStats(
            model_id=net.model_id,
            dim=net.dim,
            collection=name,
            alias=store.collection_alias,
            alias_target=target,
            listings=None if counts is None else counts[0],
            active_listings=None if counts is None else counts[1],
            note=note,
            error=error,
        )

    try:
        target = await resolve_alias(store)
    except Exception as exc:  # qdrant-client raises transport errors of several libraries
        return stats(None, note=f"cannot reach the store: {exc}", error=True)
    try:
        if store.qdrant_url is None:
            if not (store.index_path / name).exists():
                return stats(target, note="no collection yet")
            counts = await edge_counts(store, name, net.dim)
            return stats(target, counts, "counted on a copy of the shard")
        opened = open_store(store, net.model_id, net.dim)
        try:
            return stats(target, await _counts(opened))
        finally:
            await opened.close()
    except (StoreError, OSError) as exc:
        return stats(target, note=str(exc), error=True)


def gather_stats(
    store: StoreSettings,
    model: ModelSettings,
    broker: BrokerSettings,
    group_id: str,
    with_lag: bool = True,
) -> dict[str, Any]:
    """Everything `lookalike stats` shows, as a JSON-ready dict (blocking). A part that could
    not be read carries an "error" (consumer) or "error": true with a note (index). The index
    and the broker are asked side by side, so an unreachable broker adds no time."""

    async def both() -> tuple[IndexStats, list[PartitionLag] | LagUnavailableError | None]:
        lag = None
        if with_lag:
            lag = asyncio.ensure_future(
                asyncio.to_thread(
                    consumer_lag,
                    broker.broker,
                    group_id,
                    broker.topic,
                    security=broker.client_security(),
                )
            )
        index = await index_stats(store, model)
        if lag is None:
            return index, None
        try:
            return index, await lag
        except LagUnavailableError as exc:
            return index, exc

    index, lags = asyncio.run(both())
    result: dict[str, Any] = {"index": asdict(index)}
    if lags is not None:
        consumer: dict[str, Any] = {"group": group_id, "topic": broker.topic}
        if isinstance(lags, LagUnavailableError):
            consumer["error"] = str(lags)
        else:
            known = [p.lag for p in lags if p.lag is not None]
            consumer["lag"] = sum(known) if len(known) == len(lags) else None
            consumer["known_lag"] = sum(known)
            consumer["unknown_partitions"] = [p.partition for p in lags if p.lag is None]
            consumer["partitions"] = [asdict(p) for p in lags]
        result["consumer"] = consumer
    return result


def stats_failed(stats: dict[str, Any]) -> str | None:
    """The one line to print when a part of gather_stats() could not be read, else None."""
    consumer = stats.get("consumer")
    if consumer is not None and "error" in consumer:
        return str(consumer["error"])
    if stats["index"].get("error"):
        return f"cannot read the index: {stats['index']['note']}"
    return None


def format_stats(stats: dict[str, Any]) -> str:
    """A human-readable rendering of gather_stats()."""
    index = stats["index"]
    lines = [
        f"model:       {index['model_id']} ({index['dim']}-d)",
        f"collection:  {index['collection']}",
        f"alias:       {index['alias']} -> {index['alias_target'] or '(unset)'}",
        f"listings:    {_or_dash(index['listings'])} ({_or_dash(index['active_listings'])} active)",
    ]
    if index.get("note"):
        lines.append(f"note:        {index['note']}")
    consumer = stats.get("consumer")
    if consumer is not None:
        where = f"{consumer['group']} on {consumer['topic']}"
        if "error" in consumer:
            lines.append(f"consumer:    {where}: {consumer['error']}")
        else:
            if consumer["lag"] is not None:
                lag = f"lag {consumer['lag']}"
            else:
                unknown = ", ".join(str(p) for p in consumer["unknown_partitions"])
                lag = f"lag unknown on partition {unknown}; {consumer['known_lag']} on the others"
            lines.append(f"consumer:    {where}, {lag}")
            for p in consumer["partitions"]:
                committed = "-" if p["committed"] is None else p["committed"]
                line = (
                    f"  partition {p['partition']}: committed {committed}, "
                    f"end {p['high_watermark']}, lag {_or_dash(p['lag'])}"
                )
                if p["note"]:
                    line += f" ({p['note']})"
                lines.append(line)
    return "\n".join(lines)


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)
