"""compose.yaml: valid against the Compose specification, and it speaks this project's language
(every LOOKALIKE_* variable is a real setting, every command a real subcommand)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from lookalike.cli import build_parser
from models.settings import (
    ENV_PREFIX,
    BrokerSettings,
    FetchSettings,
    ImageSettings,
    ModelSettings,
    StoreSettings,
)
from query.settings import ApiSettings
from stream.settings import StreamSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
SETTINGS_CLASSES: list[type[BaseSettings]] = [
    ModelSettings,
    ImageSettings,
    FetchSettings,
    StoreSettings,
    BrokerSettings,
    StreamSettings,
    ApiSettings,
]
# `lookalike` is the image's entrypoint (Dockerfile): a service's command is its arguments.
ENTRYPOINT = "lookalike"


def _check_jsonschema() -> str:
    """check-jsonschema lives in its own tool venv (`make tools`): it needs a click newer than
    faust-streaming allows, so it never enters the project's environment."""
    candidates = [
        os.environ.get("CHECK_JSONSCHEMA"),
        str(ROOT / ".venv-tools" / "bin" / "check-jsonschema"),
        shutil.which("check-jsonschema"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "check-jsonschema not found: run `make tools` (creates .venv-tools) or set CHECK_JSONSCHEMA"
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _lookalike_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def _lookalike_env(compose: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for service in _lookalike_services(compose).values():
        for key, value in service.get("environment", {}).items():
            env[key] = str(value)
    return env


def test_compose_file_is_valid_compose_spec() -> None:
    result = subprocess.run(
        [_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    # The same check on a service with an unknown key must fail, or the test above proves nothing.
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  api:\n    image: x\n    restart_policy_typo: always\n")
    result = subprocess.run(
        [_check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0


def test_every_lookalike_variable_is_a_setting_and_parses(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _lookalike_env(compose)
    assert env, "the lookalike services set no LOOKALIKE_* variables"
    for key, raw in env.items():
        assert key.startswith(ENV_PREFIX), key
        monkeypatch.setenv(key, raw)
    for key, raw in env.items():
        field = key.removeprefix(ENV_PREFIX).lower()
        owners = [cls for cls in SETTINGS_CLASSES if field in cls.model_fields]
        assert owners, f"{key} is not a setting of any settings class"
        for cls in owners:
            value = getattr(cls(), field)
            # The setting read the variable: its value is what compose.yaml says.
            assert str(value).lower() == raw.lower(), (key, raw, value)


def test_every_service_command_is_a_cli_subcommand(compose: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f'ENTRYPOINT ["{ENTRYPOINT}"]' in dockerfile
    parser = build_parser()
    commands = {name: svc["command"] for name, svc in _lookalike_services(compose).items()}
    assert {"worker", "api"} <= set(commands)
    for name, command in commands.items():
        args = parser.parse_args(command)
        assert args.command == command[0], name
    api = parser.parse_args(compose["services"]["api"]["command"])
    ports = compose["services"]["api"]["ports"]
    assert any(str(p).endswith(f":{api.port}") for p in ports), (ports, api.port)
