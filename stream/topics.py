"""Creates the worker's topics when missing: listings, its retry topic and its dead letters."""

from __future__ import annotations

import dataclasses

from stream.broker import create_topics, topic_partitions
from stream.settings import WorkerSettings


def prepare_topics(settings: WorkerSettings) -> WorkerSettings:
    """Make sure the listings, retry and dead-letter topics exist; the returned settings carry
    the listings topic's real partition count. Blocking: call it before the loop, or in a thread.
    """
    b = settings.broker
    create_topics(b.broker, {b.topic: b.topic_partitions, b.retry_topic: 1, b.dlq_topic: 1})
    partitions = topic_partitions(b.broker)[b.topic]
    if partitions == b.topic_partitions:
        return settings
    broker = b.model_copy(update={"topic_partitions": partitions})
    return dataclasses.replace(settings, broker=broker)
