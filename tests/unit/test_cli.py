"""The command line's contract: subcommands and the options of `lookalike dev`."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike.cli import build_parser


def test_dev_defaults() -> None:
    args = build_parser().parse_args(["dev"])
    assert (args.host, args.port, args.data) == ("127.0.0.1", 8080, Path("data"))
    assert args.broker is None and args.qdrant_url is None
    assert args.demo is True
    assert args.demo_size == 200


def test_dev_options() -> None:
    args = build_parser().parse_args(
        [
            *("dev", "--port", "0", "--data", "/tmp/x", "--broker", "h:9092", "--no-demo"),
            *("--qdrant-url", "http://q:6333", "--demo-size", "24"),
        ]
    )
    assert (args.port, args.data, args.broker) == (0, Path("/tmp/x"), "h:9092")
    assert (args.demo, args.demo_size, args.qdrant_url) == (False, 24, "http://q:6333")


@pytest.mark.parametrize("size", ["0", "-3", "many"])
def test_dev_rejects_a_bad_demo_size(size: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["dev", "--demo-size", size])
    assert exited.value.code == 2
    assert "--demo-size" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command", ["dev", "worker", "api", "publish", "stats", "reindex", "dlq", "alias"]
)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--help"])
    assert exited.value.code == 0
    assert "usage: lookalike " + command in capsys.readouterr().out


def test_stats_and_reindex_options() -> None:
    stats = build_parser().parse_args(["stats", "--json", "--no-lag", "--group", "g"])
    assert (stats.json, stats.lag, stats.group) == (True, False, "g")
    assert build_parser().parse_args(["reindex", "--no-swap"]).swap is False


def test_reindex_failure_budget() -> None:
    from lookalike.reindex import FailureBudget

    args = build_parser().parse_args(["reindex"])
    assert str(args.max_failed) == "1%"
    assert args.max_failed.allowed(201) == 2 and args.max_failed.allowed(50) == 0
    budget = build_parser().parse_args(["reindex", "--max-failed", "3"]).max_failed
    assert budget == FailureBudget(3, percent=False) and budget.allowed(10_000) == 3


@pytest.mark.parametrize("budget", ["lots", "150%", "2.5", "-1"])
def test_reindex_rejects_a_bad_budget(budget: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["reindex", "--max-failed", budget])
    assert exited.value.code == 2
    assert "--max-failed" in capsys.readouterr().err


def test_dlq_alias_and_publish_options() -> None:
    parse = build_parser().parse_args
    listed = parse(["dlq", "list", "--reason", "images_unavailable", "--since", "2h", "--json"])
    assert (listed.dlq_command, listed.reason, listed.since, listed.json) == (
        "list",
        "images_unavailable",
        "2h",
        True,
    )
    assert parse(["dlq", "show", "3"]).offset == "3"
    replay = parse(["dlq", "replay", "--dry-run", "--broker", "h:1"])
    assert (replay.dry_run, replay.broker, replay.reason) == (True, "h:1", None)
    assert parse(["alias", "set", "listings__m"]).collection == "listings__m"
    assert parse(["alias", "show"]).alias_command == "show"
    publish = parse(["publish", "x.csv", "--skip-invalid", "--format", "csv"])
    assert (publish.skip_invalid, publish.format) == (True, "csv")


@pytest.mark.parametrize("command", ["dlq", "alias"])
def test_dlq_and_alias_need_a_subcommand(command: str) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command])
    assert exited.value.code == 2


def test_since_takes_a_time_or_a_duration() -> None:
    from datetime import UTC, datetime, timedelta

    from lookalike.dlq import parse_since

    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-12-01T10:00:00Z") == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert parse_since("2026-12-01T10:00:00") == datetime(2026, 12, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday")


def test_every_bad_line_of_a_file_is_named(tmp_path: Path) -> None:
    from lookalike.publish import CSV_COLUMNS, read_events

    good = (
        '{"type": "listing.deleted", "listing_id": "L1", "version": 2, '
        '"occurred_at": "2026-11-24T11:00:00Z"}'
    )
    path = tmp_path / "events.jsonl"
    path.write_text(
        "\n".join([good, "", '{"type": "listing.deleted"}', "[1]", good.replace("Z", "")]) + "\n"
    )
    batch = read_events(path, "jsonl")
    assert len(batch.events) == 1
    assert [b.lineno for b in batch.bad] == [3, 4, 5]
    assert "listing_id" in batch.bad[0].reason and "timezone" in batch.bad[2].reason

    csv_path = tmp_path / "catalog.csv"
    csv_path.write_text(
        ",".join(CSV_COLUMNS)
        + '\n,L2,1,2026-11-24T10:00:00Z,active,"two\nlines",c,S1,1.00,USD,https://i.example/a.jpg\n'
        + ",L3,x,2026-11-24T10:00:00Z,active,t,c,S1,1.00,USD,https://i.example/a.jpg\n"
        + ",L4,1,2026-11-24T10:00:00Z,active,t,c,S1,1.00,USD,,extra\n"
    )
    batch = read_events(csv_path, "csv")
    assert len(batch.events) == 1
    # Rows are numbered by the line they start on: the quoted title spans lines 2 and 3.
    assert [b.lineno for b in batch.bad] == [4, 5]
    assert "version" in batch.bad[0].reason and "more cells" in batch.bad[1].reason
