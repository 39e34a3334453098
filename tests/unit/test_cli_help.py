"""The README's Command line section and `--help` agree: every subcommand, flag and positional
choice the parser knows is documented there, and the README documents nothing the parser lacks."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from lookalike.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
FLAG = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")
Command = tuple[str, ...]


def _commands(
    parser: argparse.ArgumentParser, path: Command = ()
) -> Iterator[tuple[Command, argparse.ArgumentParser]]:
    """Every (sub)command path with its parser; a command with subcommands yields those."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _commands(sub, (*path, name))


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {
        option
        for action in parser._actions
        for option in action.option_strings
        if option not in ("-h", "--help")
    }


def _choices(parser: argparse.ArgumentParser) -> set[str]:
    """The fixed words of positionals (`schema events`): each is a command of its own."""
    return {
        str(choice)
        for action in parser._actions
        if not action.option_strings
        and not isinstance(action, argparse._SubParsersAction)
        and action.choices is not None
        for choice in action.choices
    }


def _readme_commands(known: set[Command]) -> dict[Command, str]:
    """Command path -> the README text of its synopsis lines (comments dropped), from the code
    blocks of the Command line section. A line that does not start with `lookalike` continues
    the synopsis above it."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Command line\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", section, flags=re.DOTALL)
    found: dict[Command, str] = {}
    current: Command | None = None
    for line in "\n".join(blocks).splitlines():
        text = re.sub(r"\s#.*$", "", line)
        words = text.split()
        if words[:1] == ["lookalike"]:
            path: Command = ()
            for word in words[1:]:
                if any(c[: len(path) + 1] == (*path, word) for c in known):
                    path = (*path, word)
                else:
                    break
            current = path
            found[current] = found.get(current, "") + " " + text
        elif current is not None and line.startswith(" ") and words:
            found[current] += " " + text
    return found


def _parsed() -> dict[Command, argparse.ArgumentParser]:
    return dict(_commands(build_parser()))


def test_every_subcommand_is_in_the_readme() -> None:
    commands = _parsed()
    documented = _readme_commands(set(commands))
    missing = [" ".join(c) for c in commands if c not in documented]
    assert missing == [], "subcommands missing from the README's Command line section"


@pytest.mark.parametrize("command", sorted(_parsed()), ids=" ".join)
def test_flags_in_help_equal_flags_in_the_readme(command: Command) -> None:
    parser = _parsed()[command]
    synopsis = _readme_commands(set(_parsed())).get(command)
    if synopsis is None:
        pytest.fail(f"`lookalike {' '.join(command)}` is not in the README's Command line section")
    written = set(FLAG.findall(synopsis))
    assert _flags(parser) - written == set(), "flags of --help missing from the README"
    assert written - _flags(parser) == set(), "README flags that --help does not have"
    words = set(synopsis.split())
    assert _choices(parser) - words == set(), "choices missing from the README"
