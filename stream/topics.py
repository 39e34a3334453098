"""Creates the worker's topics when missing: listings, its retry topic and its dead letters."""

from __future__ import annotations

import dataclasses

import structlog
from confluent_kafka import KafkaException

from stream.broker import BrokerError, create_topics, topic_partitions
from stream.settings import WorkerSettings

log = structlog.get_logger("stream.topics")


def _wanted(settings: WorkerSettings) -> dict[str, int]:
    b = settings.broker
    return {b.topic: b.topic_partitions, b.retry_topic: 1, b.dlq_topic: 1}


def prepare_topics(settings: WorkerSettings) -> WorkerSettings:
    """Make sure the listings, retry and dead-letter topics exist; the returned settings carry
    the listings topic's real partition count. Blocking: call it before the loop, or in a thread.
    """
    b = settings.broker
    security = b.client_security()
    create_topics(b.broker, _wanted(settings), security=security)
    partitions = topic_partitions(b.broker, security)[b.topic]
    if partitions == b.topic_partitions:
        return settings
    broker = b.model_copy(update={"topic_partitions": partitions})
    return dataclasses.replace(settings, broker=broker)


def restore_topics(settings: WorkerSettings) -> list[str]:
    """Create again the worker's topics that the broker no longer has (a dev broker restarted
    empty), with short timeouts: an unreachable broker is retried next time. Blocking."""
    try:
        b = settings.broker
        created = create_topics(
            b.broker, _wanted(settings), timeout_s=2.0, security=b.client_security()
        )
    except (KafkaException, BrokerError) as exc:
        log.debug("topics_not_checked", error=str(exc))
        return []
    if created:
        log.warning("topics_recreated", topics=created)
    return created
