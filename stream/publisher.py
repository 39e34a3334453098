"""Publishes listing events with an idempotent confluent-kafka producer (Python or JSON lines)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from models.events import ListingDeleted, ListingUpserted, encode_event, event_key, parse_event


class PublishError(RuntimeError):
    """The broker did not acknowledge an event."""


class ListingPublisher:
    """Sends events keyed by listing id; `flush()` returns once the broker acknowledged them all."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = "listings",
        *,
        on_delivered: Callable[[int], object] | None = None,
        **config: Any,
    ) -> None:
        """on_delivered(1) is called for each event the broker acknowledged (progress bars)."""
        self.topic = topic
        self._on_delivered = on_delivered
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                # Retries never duplicate or reorder a listing's events.
                "enable.idempotence": True,
                "acks": "all",
                # murmur2 is the Java client's (and Faust/aiokafka's) partitioner: every producer of
                # the topic puts a listing on the same partition.
                "partitioner": "murmur2_random",
                "linger.ms": 5,
                # A topic the broker lost (a dev broker restarted empty) is the worker's to create,
                # with its partition count: a publish waits for it rather than creating it.
                "allow.auto.create.topics": False,
                **config,
            }
        )
        self._lock = threading.Lock()
        self._errors: list[str] = []
        self.delivered = 0
        # partition -> the offset after the last acknowledged event (what a caught-up consumer
        # group has committed).
        self.end_offsets: dict[int, int] = {}

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            if err is not None:
                self._errors.append(f"{msg.key()!r}: {err}")
            else:
                self.delivered += 1
                partition, offset = msg.partition(), msg.offset()
                if partition is not None and offset is not None and offset >= 0:
                    end = self.end_offsets.get(partition, 0)
                    self.end_offsets[partition] = max(end, offset + 1)
        if err is None and self._on_delivered is not None:
            self._on_delivered(1)

    def publish(self, event: ListingUpserted | ListingDeleted) -> None:
        """Queue one event (non-blocking unless the local queue is full)."""
        self.publish_raw(event_key(event), encode_event(event))

    def publish_raw(
        self,
        key: bytes | None,
        value: bytes,
        headers: dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        """Queue raw bytes as they are (tests of malformed events, replays of dead letters)."""
        while True:
            try:
                self._producer.produce(
                    self.topic, key=key, value=value, headers=headers, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def publish_many(self, events: Iterable[ListingUpserted | ListingDeleted]) -> int:
        n = 0
        for event in events:
            self.publish(event)
            n += 1
        return n

    def publish_file(self, path: Path, on_event: Callable[[], object] | None = None) -> int:
        """Publish every event of a JSON-lines file (blank lines skipped); invalid lines raise
        ValueError naming the file and line. `on_event` is called after each one (progress)."""
        n = 0
        with path.open("rb") as lines:
            for lineno, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    event = parse_event(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{lineno}: {exc}") from exc
                self.publish(event)
                n += 1
                if on_event is not None:
                    on_event()
        return n

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued event to be acknowledged; raise PublishError if any failed."""
        remaining = self._producer.flush(timeout_s)
        with self._lock:
            errors, self._errors = self._errors, []
        if errors:
            raise PublishError(f"{len(errors)} events failed: {errors[:3]}")
        if remaining:
            raise PublishError(f"{remaining} events still unacknowledged after {timeout_s}s")

    def close(self) -> None:
        """Flush, then release the producer's connections and threads."""
        try:
            self.flush()
        finally:
            self._producer.close()

    def __enter__(self) -> ListingPublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._producer.close()
