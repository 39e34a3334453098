"""`lookalike publish`: the whole file is validated before anything is sent, and an unreachable
broker is one line within seconds."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from lookalike.cli import build_parser
from models.events import ListingUpserted, encode_event, parse_event
from stream.broker import DevBroker, free_port, read_to_end, topic_partitions
from tests.stream_support import REPO, deletion, listing

pytestmark = pytest.mark.slow


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


def _lines(n: int) -> list[str]:
    return [
        encode_event(listing(f"P{i}", 1, [f"https://img.example/P{i}.jpg"])).decode()
        for i in range(n)
    ]


def test_a_bad_line_3_sends_nothing_and_names_every_bad_line(
    broker: DevBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = f"listings-{uuid.uuid4().hex[:8]}"
    lines = _lines(5)
    lines[2] = lines[2].replace('"version":1', '"version":"one"')
    lines[4] = "not json"
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    code = _run(["publish", str(path), "--broker", broker.bootstrap, "--topic", topic])

    err = capsys.readouterr().err
    assert code != 0
    assert f"{path}:3: " in err and "version" in err
    assert f"{path}:5: " in err
    assert f"{path}:1:" not in err
    assert "nothing was sent" in err
    # Validation comes before any contact with the broker: not even the topic was created.
    assert topic not in topic_partitions(broker.bootstrap)

    code = _run(
        ["publish", str(path), "--broker", broker.bootstrap, "--topic", topic, "--skip-invalid"]
    )
    assert code == 0
    sent = read_to_end(broker.bootstrap, topic)
    assert sorted(m.key() or b"" for m in sent) == [b"P0", b"P1", b"P3"]


def test_a_csv_file_is_published_with_its_column_mapping(broker: DevBroker, tmp_path: Path) -> None:
    topic = f"listings-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "catalog.csv"
    path.write_text(
        "listing_id,version,occurred_at,state,title,category,shop_id,price_amount,"
        "price_currency,image_urls,notes\n"
        'C1,3,2026-11-24T10:00:00Z,active,"Mug, speckled",home/mugs,S1,24.00,USD,'
        '"https://img.example/a.jpg https://img.example/b.jpg",ignored\n'
        "C2,4,2026-11-24T10:00:00Z,sold_out,Vase,home/vases,S1,9.50,EUR,"
        "https://img.example/c.jpg,\n"
    )
    gone = deletion("C3", 9)
    deleted = tmp_path / "deleted.csv"
    deleted.write_text(
        f"type,listing_id,version,occurred_at\nlisting.deleted,C3,9,{gone.occurred_at.isoformat()}\n"
    )
    assert _run(["publish", str(path), "--broker", broker.bootstrap, "--topic", topic]) == 0
    assert _run(["publish", str(deleted), "--broker", broker.bootstrap, "--topic", topic]) == 0

    events = {m.key(): parse_event(m.value() or b"") for m in read_to_end(broker.bootstrap, topic)}
    mug, vase = events[b"C1"], events[b"C2"]
    assert isinstance(mug, ListingUpserted) and isinstance(vase, ListingUpserted)
    assert (mug.title, mug.version, str(mug.price.amount)) == ("Mug, speckled", 3, "24.00")
    assert mug.image_urls == ["https://img.example/a.jpg", "https://img.example/b.jpg"]
    assert vase.state == "sold_out"
    assert events[b"C3"].type == "listing.deleted"


def test_no_broker_fails_within_15_s_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(_lines(3)) + "\n")
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "lookalike", "publish", str(path), "--broker", address],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    took = time.monotonic() - started
    assert done.returncode != 0
    assert took < 15, took
    # One line besides the validation's progress bar: no librdkafka connection logs.
    lines = [line for line in done.stderr.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and "rdkafka" not in done.stderr, done.stderr
    assert lines[0].startswith("publish: ") and address in lines[0]
    assert "--broker" in lines[0] and "LOOKALIKE_BROKER" in lines[0]
    print(json.dumps({"took_s": round(took, 1), "line": lines[0]}))
