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


@pytest.mark.parametrize("command", ["dev", "worker", "api", "publish", "stats", "reindex"])
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--help"])
    assert exited.value.code == 0
    assert "usage: lookalike " + command in capsys.readouterr().out


def test_stats_and_reindex_options() -> None:
    stats = build_parser().parse_args(["stats", "--json", "--no-lag", "--group", "g"])
    assert (stats.json, stats.lag, stats.group) == (True, False, "g")
    assert build_parser().parse_args(["reindex", "--no-swap"]).swap is False
