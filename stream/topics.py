"""Creates the worker's topics when missing, with the partition counts Faust's table requires."""

from __future__ import annotations

import dataclasses

from stream.app import changelog_topic
from stream.broker import BrokerError, create_topics, topic_partitions
from stream.settings import WorkerSettings


def prepare_topics(settings: WorkerSettings) -> WorkerSettings:
    """Make sure the listings, dead-letter and version-changelog topics exist.

    The changelog must have as many partitions as the listings topic (Faust keeps a listing's
    version on the partition its events arrive on), so the count is read from the broker and the
    returned settings carry it. Blocking: call it before the worker's loop runs, or in a thread.
    """
    b = settings.broker
    create_topics(b.broker, {b.topic: b.topic_partitions})
    partitions = topic_partitions(b.broker)[b.topic]
    changelog = changelog_topic(settings)
    create_topics(b.broker, {b.dlq_topic: 1, changelog: partitions})
    existing = topic_partitions(b.broker)
    if existing.get(changelog) != partitions:
        raise BrokerError(
            f"topic {changelog} has {existing.get(changelog)} partitions but {b.topic} has "
            f"{partitions}: they must match (recreate the changelog, or use another group id)"
        )
    if partitions == b.topic_partitions:
        return settings
    broker = b.model_copy(update={"topic_partitions": partitions})
    return dataclasses.replace(settings, broker=broker)
