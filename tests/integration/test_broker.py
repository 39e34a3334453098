"""The dev broker helper and the publisher against a real Tansu process."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from lookalike.cli import main as cli_main
from models.events import ListingDeleted, ListingUpserted, encode_event, parse_event
from stream.broker import CLIENT_GROUP_SETTINGS, DevBroker, dev_broker, topic_partitions
from stream.publisher import ListingPublisher
from tests.stream_support import deletion, listing

pytestmark = pytest.mark.slow


def consume(
    bootstrap: str, topic: str, n: int, timeout_s: float = 30.0
) -> list[tuple[bytes, bytes, int]]:
    """n messages of `topic` through a consumer group (join, assignment, fetch)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            **CLIENT_GROUP_SETTINGS,
        }
    )
    got: list[tuple[bytes, bytes, int]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while len(got) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                got.append((msg.key() or b"", msg.value() or b"", msg.partition() or 0))
    finally:
        consumer.close()
    return got


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def test_start_create_topics_and_stop_leaves_no_process() -> None:
    broker = DevBroker().start()
    pid = broker.pid
    assert pid is not None and answers(broker.host, broker.port)
    try:
        broker.create_topics({"listings": 4, "listings.dlq": 1})
        parts = topic_partitions(broker.bootstrap)
        assert parts["listings"] == 4
        assert parts["listings.dlq"] == 1
        # Creating again is harmless.
        broker.create_topics({"listings": 4})
    finally:
        broker.stop()
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    assert not answers(broker.host, broker.port)
    broker.stop()  # stopping twice is fine


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_two_brokers_get_different_ports() -> None:
    with DevBroker() as a, DevBroker() as b:
        assert a.port != b.port
        assert answers(a.host, a.port) and answers(b.host, b.port)


def test_publisher_round_trip_keys_events_by_listing_and_keeps_order() -> None:
    with dev_broker({"listings": 3}) as broker:
        events: list[ListingUpserted | ListingDeleted] = [
            listing(f"L{i}", 1, [f"https://img.example/{i}.jpg"]) for i in range(12)
        ]
        events += [deletion("L0", 2), listing("L0", 3, ["https://img.example/new.jpg"])]
        with ListingPublisher(broker.bootstrap, "listings") as publisher:
            assert publisher.publish_many(events) == len(events)
        assert publisher.delivered == len(events)
        assert sum(publisher.end_offsets.values()) == len(events)

        started = time.monotonic()
        got = consume(broker.bootstrap, "listings", len(events))
        # Short group timeouts let a consumer join Tansu in seconds.
        assert time.monotonic() - started < 20
        assert sorted(v for _, v, _ in got) == sorted(encode_event(e) for e in events)
        for key, value, _ in got:
            assert key == parse_event(value).listing_id.encode()
        # A listing's events share one partition, in publish order.
        l0 = [(p, parse_event(v).version) for k, v, p in got if k == b"L0"]
        assert len({p for p, _ in l0}) == 1
        assert [version for _, version in l0] == [1, 2, 3]
        assert len({p for _, _, p in got}) > 1


def test_publish_file_sends_every_line(tmp_path: Path) -> None:
    events = [listing(f"F{i}", i, [f"https://img.example/{i}.jpg"]) for i in range(5)]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(encode_event(e) for e in events) + b"\n\n")
    with dev_broker({"listings": 2}) as broker:
        with ListingPublisher(broker.bootstrap) as publisher:
            assert publisher.publish_file(path) == 5
        got = consume(broker.bootstrap, "listings", 5)
    assert sorted(parse_event(v).listing_id for _, v, _ in got) == [f"F{i}" for i in range(5)]


def test_publish_file_refuses_an_invalid_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(encode_event(listing("F1", 1, ["https://img.example/1.jpg"])) + b"\n{oops\n")
    with (
        dev_broker({"listings": 1}) as broker,
        ListingPublisher(broker.bootstrap) as publisher,
        pytest.raises(ValueError, match=r"events.jsonl:2"),
    ):
        publisher.publish_file(path)


def test_a_broker_that_cannot_start_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="exited with status 3"):
        DevBroker(binary=fake).start(timeout_s=5)


def test_lookalike_publish_sends_a_file_and_names_the_bad_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [listing(f"P{i}", i, [f"https://img.example/{i}.jpg"]) for i in range(3)]
    good = tmp_path / "good.jsonl"
    good.write_bytes(b"\n".join(encode_event(e) for e in events) + b"\n")
    bad = tmp_path / "bad.jsonl"
    # The blank line counts: the broken event is on line 3 of the file.
    bad.write_bytes(encode_event(events[0]) + b"\n\n{oops\n")
    with dev_broker({"listings": 1}) as broker:
        with pytest.raises(SystemExit) as ok:
            cli_main(["publish", str(good), "--broker", broker.bootstrap])
        assert ok.value.code == 0
        got = consume(broker.bootstrap, "listings", 3)
        with pytest.raises(SystemExit) as refused:
            cli_main(["publish", str(bad), "--broker", broker.bootstrap])
    assert refused.value.code == 2
    assert "bad.jsonl:3" in capsys.readouterr().err
    assert [parse_event(v).listing_id for _, v, _ in got] == ["P0", "P1", "P2"]
