"""`lookalike dev` as a user runs it: a subprocess with its own broker, index and demo catalog,
searched over HTTP, changed through the broker it printed, and stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lookalike.demo import DemoCatalog, build_catalog
from models.evalset.realphotos import real_photo_paths
from models.events import ListingDeleted, ListingUpserted
from stream.broker import DevBroker, topic_partitions
from stream.publisher import ListingPublisher
from tests.stream_support import group_caught_up

pytestmark = pytest.mark.slow

DEMO_SIZE = 24
STARTUP_S = 60.0
SHUTDOWN_S = 10.0


@dataclass
class DevStack:
    process: subprocess.Popen[bytes]
    search_url: str
    broker: str
    data: Path
    stderr_path: Path

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]


def _read_announcements(
    process: subprocess.Popen[bytes], timeout_s: float, count: int = 2
) -> list[str]:
    """stdout lines until `count` arrived or `timeout_s` passed (stdout carries nothing else)."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    lines: list[str] = []
    buffer = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(lines) < count:
        if not selector.select(timeout=0.2):
            if process.poll() is not None:
                break
            continue
        chunk = os.read(process.stdout.fileno(), 4096)
        if not chunk:
            break
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        lines.extend(line.decode() for line in complete)
    selector.close()
    return lines


def _http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    """(status, JSON body) of a request; HTTP errors are answers too."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _search(base: str, photo: bytes, k: int = 5, query: str = "") -> list[dict[str, Any]]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, answer = _http(
        f"{base}v1/search?k={k}{query}",
        body,
        {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert status == 200, answer
    listings: list[dict[str, Any]] = answer["listings"]
    return listings


def _wait(check: Callable[[], bool], timeout_s: float, what: str, stack: DevStack) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert stack.process.poll() is None, f"lookalike dev exited:\n{stack.log()}"
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{stack.log()}")


def _port_open(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _tansu_pids(bootstrap: str) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-f", f"tansu.*tcp://{bootstrap}"], capture_output=True, text=True, check=False
    )
    return [int(pid) for pid in found.stdout.split()]


def _ensure_stopped(process: subprocess.Popen[bytes]) -> None:
    """Stop a stack a failed test left running the way a user would, so that it stops its
    broker too (a killed stack cannot); kill it only if that does not work."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=SHUTDOWN_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def catalog() -> DemoCatalog:
    # The same seed and size as the stack is started with: the test knows what it published.
    return build_catalog(DEMO_SIZE, seed=7)


def _start_dev(data: Path, stderr_path: Path) -> DevStack:
    env = {**os.environ, "LOOKALIKE_DEVICE": "cpu", "LOOKALIKE_EMBED_BATCH_SIZE": "4"}
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "lookalike", "dev", "--port", "0", "--data", str(data)),
                *("--demo-size", str(DEMO_SIZE), "--demo-seed", "7"),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    lines = _read_announcements(process, STARTUP_S)
    stack = DevStack(process, "", "", data, stderr_path)
    if len(lines) != 2:
        _ensure_stopped(process)
        raise AssertionError(f"stdout: {lines!r}\n{stack.log()}")
    assert lines[0].startswith("search: ") and lines[1].startswith("broker: "), lines
    stack.search_url = lines[0].removeprefix("search: ")
    stack.broker = lines[1].removeprefix("broker: ")
    return stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    data = tmp_path_factory.mktemp("dev")
    started = _start_dev(data, data / "stderr.log")
    try:
        assert started.search_url.startswith("http://127.0.0.1:"), started.search_url
        assert started.search_url.endswith("/"), started.search_url
        assert started.broker.startswith("127.0.0.1:"), started.broker
        yield started
    finally:
        _ensure_stopped(started.process)


def test_demo_catalog_is_served_indexed_and_edited_live(
    stack: DevStack, catalog: DemoCatalog
) -> None:
    base = stack.search_url

    def ready() -> bool:
        status, _ = _http(f"{base}readyz")
        return bool(status == 200)

    _wait(ready, 30, "/readyz", stack)

    # The demo's live edits are published once the catalog is indexed; once they show, the whole
    # catalog went through the stack.
    price_edit = next(e.listing for e in catalog.edits if e.kind == "price")
    photo_edit = next(e.listing for e in catalog.edits if e.kind == "photo")
    deleted = next(e.listing for e in catalog.edits if e.kind == "delete")

    def edits_applied() -> bool:
        price_status, priced = _http(f"{base}v1/listings/{price_edit.listing_id}")
        photo_status, photo = _http(f"{base}v1/listings/{photo_edit.listing_id}")
        gone_status, _ = _http(f"{base}v1/listings/{deleted.listing_id}")
        return bool(
            price_status == 200
            and priced["price"]["amount"] == str(price_edit.price)
            and photo_status == 200
            and photo["title"] == photo_edit.title
            and gone_status == 404
        )

    _wait(edits_applied, 60, "the demo's live edits", stack)
    # One process, one /readyz and /metrics: the worker's state and counts are the stack's.
    status, readiness = _http(f"{base}readyz")
    assert status == 200, readiness
    assert readiness["worker"]["ready"] is True, readiness
    assert readiness["worker"]["partitions"], readiness
    with urllib.request.urlopen(f"{base}metrics", timeout=10) as response:
        exposition = response.read().decode()
    indexed = re.search(
        r'^lookalike_indexer_events_total\{outcome="indexed"\} (\S+)$', exposition, re.M
    )
    assert indexed is not None and float(indexed.group(1)) >= DEMO_SIZE, exposition[-2000:]
    assert "lookalike_http_request_duration_seconds_bucket" in exposition
    edited = {edit.listing.listing_id: edit.listing for edit in catalog.edits}
    for listing in catalog.listings:
        status, shown = _http(f"{base}v1/listings/{listing.listing_id}")
        if listing.listing_id == deleted.listing_id:
            assert status == 404
            continue
        expected = edited.get(listing.listing_id, listing)
        assert status == 200, (listing.listing_id, shown)
        assert (shown["title"], shown["category"]) == (expected.title, expected.category)
        assert shown["price"] == {"amount": str(expected.price), "currency": expected.currency}

    # The photos on disk are the catalog's own (deterministic from the seed).
    target = next(item for item in catalog.listings if item.listing_id not in catalog.edited_ids)
    photo = (stack.data / "demo" / "photos" / target.photos[0]).read_bytes()
    assert photo == catalog.photos[target.photos[0]]
    hits = _search(base, photo)
    assert hits[0]["id"] == target.listing_id
    assert hits[0]["score"] > 0.99
    assert deleted.listing_id not in {hit["id"] for hit in hits}

    # A deletion published by anyone on the printed broker takes the listing out of results.
    with ListingPublisher(stack.broker) as publisher:
        publisher.publish(
            ListingDeleted(
                listing_id=target.listing_id,
                version=time.time_ns(),  # newer than the demo's millisecond versions
                occurred_at=datetime.now(UTC),
            )
        )

    def target_gone() -> bool:
        return target.listing_id not in {hit["id"] for hit in _search(base, photo)}

    _wait(target_gone, 30, f"{target.listing_id} to leave the results", stack)
    status, _ = _http(f"{base}v1/listings/{target.listing_id}")
    assert status == 404


def test_the_calibrated_cut_off_keeps_motorcycles_out_of_a_coffee_search(
    stack: DevStack, catalog: DemoCatalog
) -> None:
    # After the test above: the demo is indexed. Its 24 listings hold motorcycles but no cup.
    status, config = _http(f"{stack.search_url}v1/config")
    assert status == 200, config
    threshold = config["relevance_threshold"]
    coffee = real_photo_paths()["coffee"].read_bytes()
    motorcycles = {li.listing_id for li in catalog.listings if li.title == "Vintage motorcycle"}
    assert motorcycles
    padded = _search(stack.search_url, coffee, k=24)
    assert motorcycles & {hit["id"] for hit in padded}
    cut = _search(stack.search_url, coffee, k=24, query=f"&min_score={threshold}")
    assert not motorcycles & {hit["id"] for hit in cut}, cut
    assert all(hit["score"] >= threshold for hit in cut)


def test_ctrl_c_stops_everything_cleanly(stack: DevStack) -> None:
    broker_pids = _tansu_pids(stack.broker)
    assert broker_pids, "the dev broker should be running before the stop"
    started = time.monotonic()
    stack.process.send_signal(signal.SIGINT)
    code = stack.process.wait(timeout=SHUTDOWN_S)
    took = time.monotonic() - started
    assert code == 0, stack.log()
    assert took < SHUTDOWN_S
    assert _tansu_pids(stack.broker) == []
    assert not _port_open(stack.broker)
    assert not _port_open(stack.search_url.removeprefix("http://").rstrip("/"))
    log = stack.log()
    for event in ("worker_stopped", "store_closed", "broker_stopped"):
        assert f'"event": "{event}"' in log, log


def test_a_restart_with_a_fresh_broker_over_the_old_index_changes_nothing_older(
    stack: DevStack, catalog: DemoCatalog
) -> None:
    """The first stack is stopped (the test above); its broker and log are gone, its index is
    not. The demo's deletions stay deleted, and events older than the index change nothing."""
    assert stack.process.poll() is not None, "runs after the Ctrl-C test"
    again = _start_dev(stack.data, stack.data / "stderr-2.log")
    try:
        base = again.search_url
        _wait(lambda: '"event": "demo_edits_published"' in again.log(), 60, "the demo", again)
        deleted = next(e.listing for e in catalog.edits if e.kind == "delete")
        price_edit = next(e.listing for e in catalog.edits if e.kind == "price")
        target = next(i for i in catalog.listings if i.listing_id not in catalog.edited_ids)
        for gone in (deleted, target):
            status, _ = _http(f"{base}v1/listings/{gone.listing_id}")
            assert status == 404, (gone.listing_id, again.log())

        # Old events, as a replayed or restarted producer would send them to the fresh broker.
        url = f"http://127.0.0.1:1/{target.photos[0]}"
        stale = [
            ListingUpserted.model_validate(
                {
                    "listing_id": lid,
                    "version": 1,
                    "occurred_at": "2026-01-01T00:00:00Z",
                    "state": "active",
                    "title": "stale",
                    "category": "home/kitchen/mugs",
                    "price": {"amount": "0.01", "currency": "USD"},
                    "shop_id": "S-stale",
                    "images": [{"url": url}],
                }
            )
            for lid in (deleted.listing_id, target.listing_id, price_edit.listing_id)
        ]
        with ListingPublisher(again.broker) as publisher:
            publisher.publish_many(stale)
        ends = publisher.end_offsets
        partitions = topic_partitions(again.broker)["listings"]

        def handled() -> bool:
            return group_caught_up(again.broker, "lookalike-indexer", "listings", partitions, ends)

        _wait(handled, 60, "the stale events to be handled", again)
        for gone in (deleted, target):
            status, _ = _http(f"{base}v1/listings/{gone.listing_id}")
            assert status == 404, gone.listing_id
        status, shown = _http(f"{base}v1/listings/{price_edit.listing_id}")
        assert status == 200
        assert shown["price"]["amount"] == str(price_edit.price)
        assert shown["title"] == price_edit.title
    finally:
        _ensure_stopped(again.process)


def test_dev_on_a_given_broker_without_demo(broker: DevBroker, tmp_path: Path) -> None:
    env = {**os.environ, "LOOKALIKE_DEVICE": "cpu"}
    args = ["dev", "--no-demo", "--broker", broker.bootstrap, "--port", "0"]
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "lookalike", *args, "--data", str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    stack = DevStack(process, "", broker.bootstrap, tmp_path, stderr_path)
    try:
        lines = _read_announcements(process, STARTUP_S, count=1)
        assert len(lines) == 1 and lines[0].startswith("search: http://"), (lines, stack.log())
        base = lines[0].removeprefix("search: ")

        def ready() -> bool:
            status, _ = _http(f"{base}readyz")
            return bool(status == 200)

        _wait(ready, 30, "/readyz", stack)
        status, readiness = _http(f"{base}readyz")
        assert readiness["worker"]["ready"] is True, readiness  # idle, and polling the broker
        # It announced no broker of its own, and started none.
        assert _read_announcements(process, 1.0, count=1) == []
        assert _tansu_pids(broker.bootstrap) == [pid for pid in [broker.pid] if pid]
        assert "listings" in topic_partitions(broker.bootstrap)
        assert not (tmp_path / "demo").exists()
        status, _ = _http(f"{base}v1/listings/demo-0001")
        assert status == 404

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=SHUTDOWN_S) == 0, stack.log()
        # The broker it was given is not its to stop.
        assert _port_open(broker.bootstrap)
        assert "listings" in topic_partitions(broker.bootstrap)
    finally:
        _ensure_stopped(process)
