"""The README stays the source of truth: every setting is documented, the test command is CI's."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic_settings import BaseSettings

import models.logs
import models.settings
import query.settings
import stream.settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _env_vars() -> set[str]:
    names: set[str] = set()
    for module in (models.settings, models.logs, stream.settings, query.settings):
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings:
                prefix = obj.model_config.get("env_prefix", "")
                for name, field in obj.model_fields.items():
                    if isinstance(field.default_factory, type):
                        continue  # a composed settings class, documented by its own fields
                    names.add(f"{prefix}{name}".upper())
    return names


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"^\| `(LOOKALIKE_\w+)` \|", README, flags=re.MULTILINE))
    env_vars = _env_vars()
    assert len(env_vars) > 30
    assert env_vars - documented == set(), "settings missing from the README table"
    assert documented - env_vars == set(), "README documents settings that do not exist"


def test_ci_runs_the_readme_test_command() -> None:
    ci = [
        line.strip()
        for line in (ROOT / ".ci/run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ci[-1] == "make test"
    assert "make test" in README


def _literal_codes() -> set[str]:
    """Every string literal in the modules that make API errors: the codes they can answer."""
    sources = [*(ROOT / "query").glob("*.py"), ROOT / "models" / "images.py"]
    return {m for path in sources for m in re.findall(r'"([a-z_]+)"', path.read_text())}


def test_the_error_table_lists_only_codes_the_service_answers() -> None:
    section = README.split("### Errors, overload and what a client is told", 1)[1]
    table = section.split("\n\n", 2)[1]
    listed = set(
        re.findall(r"`([a-z_]+)`", "\n".join(line.split("|")[2] for line in table.splitlines()[2:]))
    )
    assert {"overloaded", "image_url_failed", "bad_request", "bad_url"} <= listed
    assert listed - _literal_codes() == set(), "README lists error codes nothing answers"
