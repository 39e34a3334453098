"""Faust-side adapters of the indexer: consumed events as Incoming, the DLQ and retry topics."""

from __future__ import annotations

import faust

from stream.indexer import ATTEMPT_HEADER, DUE_HEADER, Incoming

Headers = list[tuple[str, bytes]]


def incoming(event: faust.EventT[bytes]) -> Incoming:
    """A consumed Faust event as the indexer's Incoming (raw key, value and headers)."""
    msg = event.message
    headers = msg.headers
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    return Incoming(
        key=msg.key,
        value=msg.value if msg.value is not None else b"",
        headers=[(str(k), v.encode() if isinstance(v, str) else bytes(v or b"")) for k, v in pairs],
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        handle=event,
    )


def _origin(message: Incoming) -> Headers:
    """Where the message was first read, kept across retry rounds."""
    first = [(k, v) for k, v in message.headers if k.startswith("origin.")]
    if first:
        return first
    return [
        ("origin.topic", message.topic.encode()),
        ("origin.partition", str(message.partition).encode()),
        ("origin.offset", str(message.offset).encode()),
    ]


def _own(message: Incoming) -> Headers:
    """The producer's own headers, without the ones this worker adds."""
    ours = ("dlq.", "retry.", "origin.")
    return [(k, v) for k, v in message.headers if not k.startswith(ours)]


async def _send(topic: faust.TopicT, message: Incoming, headers: Headers) -> None:
    sent = await topic.send(key=message.key, value=message.value, headers=headers)
    await sent  # returns once the broker acknowledged the write


class TopicDeadLetters:
    """Dead letters on a Faust topic: original key and value bytes, headers say why and where."""

    def __init__(self, topic: faust.TopicT) -> None:
        self._topic = topic

    async def send(
        self, message: Incoming, reason: str, stage: str, attempts: int, detail: str
    ) -> None:
        headers = [
            *_own(message),
            ("dlq.reason", reason.encode()),
            ("dlq.stage", stage.encode()),
            ("dlq.attempts", str(attempts).encode()),
            ("dlq.detail", detail[:2000].encode()),
            ("dlq.topic", message.topic.encode()),
            ("dlq.partition", str(message.partition).encode()),
            ("dlq.offset", str(message.offset).encode()),
            *_origin(message),
        ]
        await _send(self._topic, message, headers)


class TopicRetries:
    """The retry topic: the original bytes, with the next attempt's number and due time."""

    def __init__(self, topic: faust.TopicT) -> None:
        self._topic = topic

    async def send(self, message: Incoming, attempt: int, due: float, reason: str) -> None:
        headers = [
            *_own(message),
            (ATTEMPT_HEADER, str(attempt).encode()),
            (DUE_HEADER, f"{due:.3f}".encode()),
            ("retry.reason", reason[:2000].encode()),
            *_origin(message),
        ]
        await _send(self._topic, message, headers)
