"""`lookalike dlq`: a listing whose photos 404 is dead-lettered, listed, replayed once when its
photos are back, and becomes searchable; `reindex` refuses while this worker holds the index."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lookalike.cli import build_parser
from lookalike.reindex import ReindexError, reindex
from models.embedder import Embedder
from models.settings import FetchSettings, ImageSettings, ModelSettings
from models.store.lease import writer_active
from stream.broker import DevBroker
from tests.imageserver import ImageServer
from tests.photos import photo_bytes
from tests.stream_support import (
    Harness,
    fresh_topics,
    listing,
    running_harness,
    wait_until,
    worker_settings,
)

pytestmark = pytest.mark.slow
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embedder]:
    yield Embedder.from_settings(ModelSettings(device="cpu", embed_batch_size=4))


@pytest.fixture
async def harness(
    broker: DevBroker,
    embedder: Embedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Harness]:
    settings = worker_settings(broker, fresh_topics(), tmp_path)
    # The command line reads its topics as an operator's shell would give them.
    monkeypatch.setenv("LOOKALIKE_BROKER", broker.bootstrap)
    monkeypatch.setenv("LOOKALIKE_TOPIC", settings.broker.topic)
    monkeypatch.setenv("LOOKALIKE_DLQ_TOPIC", settings.broker.dlq_topic)
    monkeypatch.setenv("LOOKALIKE_TOPIC_PARTITIONS", str(settings.broker.topic_partitions))
    async with running_harness(settings, embedder, broker) as harness:
        yield harness


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run a command off the event loop (the worker runs on it) and return its exit and stdout."""
    args = build_parser().parse_args(list(argv))
    code: int = await asyncio.to_thread(args.func, args)
    # The in-process worker's structured log lines share stdout: keep the command's own output.
    out = capsys.readouterr().out.splitlines(keepends=True)
    return code, "".join(line for line in out if not LOG_LINE.match(line))


async def test_a_dead_letter_is_replayed_once_and_becomes_searchable(
    harness: Harness, image_server: ImageServer, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = photo_bytes("chelsea")
    url = image_server.url("later.jpg")  # not served yet: 404
    harness.publish(listing("D1", 1, [url]))
    await harness.drained()
    assert harness.metrics.events_total("dead_lettered") == 1

    code, out = await _cli(capsys, "dlq", "list")
    assert code == 0
    assert "D1" in out and "images_unavailable" in out and "http_status" in out
    code, out = await _cli(capsys, "dlq", "list", "--json", "--since", "1h")
    (letter,) = json.loads(out)
    assert (letter["key"], letter["reason"]) == ("D1", "images_unavailable")
    assert letter["replayed"] is False
    assert letter["stage"] == "fetch" and letter["value"]["listing_id"] == "D1"
    code, out = await _cli(capsys, "dlq", "list", "--json", "--reason", "invalid_event")
    assert json.loads(out) == []
    code, out = await _cli(capsys, "dlq", "show", str(letter["offset"]))
    assert code == 0 and json.loads(out)["headers"]["dlq.reason"] == "images_unavailable"

    code, out = await _cli(capsys, "dlq", "replay", "--dry-run")
    assert code == 0 and out.startswith("would replay 1 dead letters")
    # A filter that leaves it out replays nothing and does not use it up.
    code, out = await _cli(capsys, "dlq", "replay", "--reason", "invalid_event")
    assert out.startswith("replayed 0 dead letters") and "1 left out" in out

    image_server.add("later.jpg", photo)
    code, out = await _cli(capsys, "dlq", "replay")
    assert code == 0 and out.startswith("replayed 1 dead letters"), out
    harness.published += 1
    await harness.drained()

    async def searchable() -> bool:
        top = await harness.top(photo)
        return top is not None and top[0] == "D1"

    await wait_until(searchable, 30, "the replayed listing to be searchable")
    assert harness.metrics.events_total("dead_lettered") == 1

    code, out = await _cli(capsys, "dlq", "replay")
    assert code == 0 and out.startswith("replayed 0 dead letters") and "1 replayed before" in out
    code, out = await _cli(capsys, "dlq", "list", "--json")
    assert [x["replayed"] for x in json.loads(out)] == [True]

    # The README's promise: reindex refuses while a worker writes to the Edge index.
    store = harness.settings.store
    assert writer_active(store.index_path)
    with pytest.raises(ReindexError, match="a worker is writing"):
        await reindex(store, ModelSettings(device="cpu"), FetchSettings(), ImageSettings())
