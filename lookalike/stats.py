"""`lookalike stats`: the index (model, alias, size) and the indexer group's lag per partition."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from models.settings import BrokerSettings, ModelSettings, StoreSettings
from models.store.edge import EdgeStore
from models.store.factory import collection_name_for, open_store, resolve_alias
from models.store.types import StoreError


@dataclass(frozen=True)
class PartitionLag:
    """How far a consumer group is behind on one partition (committed None: never committed)."""

    partition: int
    committed: int | None
    high_watermark: int
    lag: int


def consumer_lag(
    bootstrap: str, group_id: str, topic: str, timeout_s: float = 10.0
) -> list[PartitionLag]:
    """The group's committed offsets against the high watermarks of every partition of `topic`
    (blocking). The group is only looked at: this consumer never joins it."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group_id,
            "enable.auto.commit": False,
            # A stats probe must never look like a member of the group.
            "client.id": f"lookalike-stats-{uuid.uuid4().hex[:8]}",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise LookupError(f"topic {topic!r} does not exist on {bootstrap}")
        partitions = [TopicPartition(topic, p) for p in sorted(described.partitions)]
        committed = consumer.committed(partitions, timeout=timeout_s)
        lags: list[PartitionLag] = []
        for tp in committed:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, tp.partition), timeout=timeout_s
            )
            offset = tp.offset if tp.offset >= 0 else None
            # Never below zero: Tansu reports the high watermark short of a multi-record batch.
            lag = max(high - (offset or 0), 0)
            lags.append(PartitionLag(tp.partition, offset, high, lag))
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
    note: str | None = None


async def index_stats(store: StoreSettings, model: ModelSettings) -> IndexStats:
    """The configured model's collection: its size, and where the alias points."""
    from models.network import load_model
    from models.store.types import SearchFilters

    net = await asyncio.to_thread(load_model, model.model_name, model.model_checkpoint)
    name = collection_name_for(store.collection_alias, net.model_id)
    target = await resolve_alias(store)

    def stats(listings: int | None, active: int | None, note: str | None = None) -> IndexStats:
        return IndexStats(
            model_id=net.model_id,
            dim=net.dim,
            collection=name,
            alias=store.collection_alias,
            alias_target=target,
            listings=listings,
            active_listings=active,
            note=note,
        )

    opened = open_store(store, net.model_id, net.dim)
    try:
        if isinstance(opened, EdgeStore) and not opened.shard_path.exists():
            return stats(None, None, "no collection")
        if isinstance(opened, EdgeStore):
            # Opening an Edge shard takes its lock; never create anything from a stats probe.
            await opened.ensure_collection()
        total = await opened.count(None)
        active = await opened.count(SearchFilters())
        return stats(total, active)
    except StoreError as exc:
        return stats(None, None, str(exc))
    finally:
        await opened.close()


def gather_stats(
    store: StoreSettings,
    model: ModelSettings,
    broker: BrokerSettings,
    group_id: str,
    with_lag: bool = True,
) -> dict[str, Any]:
    """Everything `lookalike stats` shows, as a JSON-ready dict (blocking)."""
    result: dict[str, Any] = {"index": asdict(asyncio.run(index_stats(store, model)))}
    if with_lag:
        try:
            lags = consumer_lag(broker.broker, group_id, broker.topic)
            result["consumer"] = {
                "group": group_id,
                "topic": broker.topic,
                "lag": sum(p.lag for p in lags),
                "partitions": [asdict(p) for p in lags],
            }
        except (LookupError, KafkaException) as exc:
            result["consumer"] = {"group": group_id, "topic": broker.topic, "error": str(exc)}
    return result


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
        if "error" in consumer:
            lines.append(
                f"consumer:    {consumer['group']} on {consumer['topic']}: {consumer['error']}"
            )
        else:
            lines.append(
                f"consumer:    {consumer['group']} on {consumer['topic']}, lag {consumer['lag']}"
            )
            for p in consumer["partitions"]:
                committed = "-" if p["committed"] is None else p["committed"]
                lines.append(
                    f"  partition {p['partition']}: committed {committed}, "
                    f"end {p['high_watermark']}, lag {p['lag']}"
                )
    return "\n".join(lines)


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)
