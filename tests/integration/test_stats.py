"""`lookalike stats` tells the truth: lag from confirmed log ends, unknown past them, a fast
failure without a broker, and Edge counts while another process holds the shard."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, TopicPartition

from lookalike.stats import LagUnavailableError, consumer_lag
from models.events import ListingUpserted
from models.network import load_model
from models.payload import ListingPayload
from models.store.edge import EdgeStore
from models.store.factory import collection_name_for
from models.store.types import ListingPoint
from stream.broker import DevBroker, free_port
from stream.publisher import ListingPublisher
from tests.stream_support import REPO, fresh_topics, listing

pytestmark = pytest.mark.slow


def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit offsets for a group as a standalone consumer (no join), as any tool may."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        tps = [TopicPartition(topic, p, o) for p, o in offsets.items()]
        consumer.commit(offsets=tps, asynchronous=False)
    finally:
        consumer.close()


def test_lag_is_measured_to_the_real_log_end_and_unknown_past_it(broker: DevBroker) -> None:
    topics = fresh_topics()
    broker.create_topics({topics.listings: 3})
    with ListingPublisher(broker.bootstrap, topics.listings) as publisher:
        # One flush: each partition's events travel as one batch, whose base offset + 1 is what
        # Tansu reports as the high watermark.
        publisher.publish_many(listing(f"L{i}", 1, ["http://img.invalid/a.jpg"]) for i in range(40))
        publisher.flush()
        ends = dict(publisher.end_offsets)
    assert len(ends) == 3 and all(end > 2 for end in ends.values())
    _commit(broker.bootstrap, topics.group_id, topics.listings, {0: ends[0] - 2, 1: ends[1] + 50})

    measured = consumer_lag(broker.bootstrap, topics.group_id, topics.listings)
    lags = {p.partition: p for p in measured}

    assert {p: lag.high_watermark for p, lag in lags.items()} == ends
    assert (lags[0].committed, lags[0].lag, lags[0].note) == (ends[0] - 2, 2, None)
    assert lags[1].committed == ends[1] + 50 and lags[1].lag is None
    assert lags[1].note is not None and "another log" in lags[1].note
    # Never committed: behind by the whole log.
    assert (lags[2].committed, lags[2].lag) == (None, ends[2])


def test_no_broker_is_one_exception_fast_and_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    with pytest.raises(LagUnavailableError, match="LOOKALIKE_BROKER"):
        consumer_lag(f"127.0.0.1:{free_port()}", "g", "listings", budget_s=2.0)
    assert time.monotonic() - started < 5
    captured = capfd.readouterr()
    assert "FAIL" not in captured.err + captured.out


async def test_cli_counts_a_held_edge_index_and_fails_fast_without_a_broker(
    tmp_path: Path,
) -> None:
    net = load_model("efficientnet-lite0")
    index = tmp_path / "index"
    name = collection_name_for("listings", net.model_id)
    # This process holds the shard open, as a running service does.
    store = EdgeStore(index, "listings", name, net.dim)
    await store.ensure_collection()
    try:
        rng = np.random.default_rng(0)
        for i in range(3):
            event = listing(f"L{i}", 1, ["http://img.invalid/a.jpg"])
            vectors = rng.standard_normal((1, net.dim)).tolist()
            payload = _payload(event, net.model_id)
            await store.upsert_listing(ListingPoint(event.listing_id, vectors, payload))
        await store.tombstone("L2", 2, "deleted")
        env = {
            **os.environ,
            "LOOKALIKE_INDEX_PATH": str(index),
            "LOOKALIKE_BROKER": f"127.0.0.1:{free_port()}",
        }
        env.pop("LOOKALIKE_QDRANT_URL", None)
        started = time.monotonic()
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "lookalike.cli", "stats", "--json"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - started
    finally:
        await store.close()
    assert done.returncode == 1, done.stderr
    assert took < 15
    assert done.stderr.strip().splitlines() == [
        f"stats: no answer from the broker at {env['LOOKALIKE_BROKER']} "
        "(set it with --broker or LOOKALIKE_BROKER)"
    ]
    stats = json.loads(done.stdout)
    assert (stats["index"]["listings"], stats["index"]["active_listings"]) == (2, 2)
    assert stats["index"]["error"] is False
    assert "error" in stats["consumer"]
    # The copy went away with the probe.
    assert sorted(p.name for p in index.iterdir() if p.name.startswith(".stats-")) == []


def _payload(event: ListingUpserted, model_id: str) -> dict[str, Any]:
    return ListingPayload.from_event(event, model_id, event.image_urls, ["h"]).to_store()
