"""The event contract is one thing: the README's Listing events section, the JSON Schema that
`lookalike schema events` prints and the pydantic models the indexer validates with agree."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import jsonschema_rs  # comes with schemathesis, a dev dependency
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from lookalike.cli import main
from models.events import ListingState, parse_event
from models.schema import events_schema, schema_for
from query.openapi import openapi_spec
from query.views import add_routes

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ("listing.upserted", "listing.deleted")


def _section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("\n## Listing events\n", 1)[1].split("\n## ", 1)[0]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    resolved: dict[str, Any] = schema["$defs"][ref.removeprefix("#/$defs/")]
    return resolved


def _fields(
    schema: dict[str, Any], node: dict[str, Any], prefix: str = ""
) -> dict[str, tuple[dict[str, Any], bool]]:
    """Field path ("price.amount", "images[].url") -> (its schema, required)."""
    node = _resolve(schema, node)
    out: dict[str, tuple[dict[str, Any], bool]] = {}
    for name, prop in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        out[path] = (prop, name in node.get("required", []))
        inner = _resolve(schema, prop)
        if inner.get("type") == "object":
            out.update(_fields(schema, inner, f"{path}."))
        elif inner.get("type") == "array":
            out.update(_fields(schema, inner["items"], f"{path}[]."))
    return out


def _length(prop: dict[str, Any], low: str, high: str, unit: str) -> str:
    if low in prop and high in prop:
        return f"{prop[low]} to {prop[high]} {unit}"
    if high in prop:
        return f"at most {prop[high]} {unit}"
    return f"at least {prop[low]} {unit}" if low in prop else ""


def _type(schema: dict[str, Any], props: list[dict[str, Any]]) -> str:
    """What the README's type column says about a field, from its schema."""
    if all("const" in p for p in props):
        return " or ".join(f'`"{p["const"]}"`' for p in props)
    prop = _resolve(schema, props[0])
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    kind = prop["type"]
    if kind == "integer":
        return f"integer, at least {prop['minimum']}" if "minimum" in prop else "integer"
    if kind == "array":
        return f"array of {_length(prop, 'minItems', 'maxItems', 'objects')}"
    if kind == "string" and prop.get("format") == "date-time":
        return "string, RFC 3339 date-time"
    if kind == "string" and prop.get("format") == "uri":
        return f"URI, {_length(prop, 'minLength', 'maxLength', 'characters')}"
    if kind == "string" and "pattern" in prop:
        return f"string matching `{prop['pattern']}`"
    if kind == "string":
        size = _length(prop, "minLength", "maxLength", "characters")
        return f"string, {size}" if size else "string"
    return str(kind)


def _description(schema: dict[str, Any], prop: dict[str, Any]) -> str | None:
    """A field's own description, else its type's."""
    own = prop.get("description")
    return str(own) if own else _resolve(schema, prop).get("description")


def _event_schemas(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    by_type = {}
    for ref in schema["oneOf"]:
        model = _resolve(schema, ref)
        by_type[model["properties"]["type"]["const"]] = model
    return by_type


def expected_table() -> str:
    """The README's field table, generated from the schema (paste it when the models change)."""
    schema = events_schema()
    per_event = {name: _fields(schema, model) for name, model in _event_schemas(schema).items()}
    paths = list(dict.fromkeys(p for name in EVENTS for p in per_event[name]))
    rows = [
        "| field | `listing.upserted` | `listing.deleted` | type | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for path in paths:
        present = [per_event[name][path] for name in EVENTS if path in per_event[name]]
        columns = [
            ("required" if per_event[name][path][1] else "optional")
            if path in per_event[name]
            else "-"
            for name in EVENTS
        ]
        props = [prop for prop, _ in present]
        descriptions = {_description(schema, p) for p in props}
        assert len(descriptions) == 1, f"{path} means different things in different events"
        meaning = str(descriptions.pop()).replace("|", "\\|")
        rows.append(f"| `{path}` | {' | '.join(columns)} | {_type(schema, props)} | {meaning} |")
    return "\n".join(rows)


def test_the_readme_field_table_is_the_schema() -> None:
    table = "\n".join(
        line for line in _section().splitlines() if line.startswith("| ") and "|" in line[1:]
    )
    assert table == expected_table(), "regenerate with tests.unit.test_schema.expected_table()"


def test_every_field_of_the_models_has_a_description() -> None:
    schema = events_schema()
    for model in _event_schemas(schema).values():
        for path, (prop, _) in _fields(schema, model).items():
            assert _description(schema, prop), path


def test_the_readme_names_every_state() -> None:
    states = re.search(r"\*\*States\.\*\*(.*?)\n\n", _section(), flags=re.DOTALL)
    assert states is not None
    assert set(re.findall(r"`(\w+)`", states.group(1))) == set(get_args(ListingState))


def _readme_examples() -> list[bytes]:
    """Every JSON line written into a file by the section's examples."""
    bodies = re.findall(r"<<'EOF'\n(.*?)\nEOF\n", _section(), flags=re.DOTALL)
    return [line.encode() for body in bodies for line in body.splitlines() if line.strip()]


def test_the_readme_examples_are_valid_events_by_the_schema_and_the_models() -> None:
    validator = jsonschema_rs.validator_for(events_schema(), validate_formats=True)
    examples = _readme_examples()
    assert len(examples) >= 2
    for raw in examples:
        validator.validate(json.loads(raw))
        parse_event(raw)
    assert {json.loads(raw)["type"] for raw in examples} == set(EVENTS)


@pytest.mark.parametrize(
    ("amount", "valid"),
    [
        ("24.00", True),
        ("0", True),
        ("1234567.5", True),
        ("-1.00", False),
        ("1e3", False),
        (" 24", False),
        ("24.", False),
        ("NaN", False),
        (24.0, False),
    ],
)
def test_the_schema_and_the_models_agree_on_amounts(amount: object, valid: bool) -> None:
    event = json.loads(_readme_examples()[0])
    event["price"]["amount"] = amount
    by_schema = jsonschema_rs.validator_for(events_schema()).is_valid(event)
    try:
        parse_event(json.dumps(event).encode())
        by_model = True
    except ValueError:
        by_model = False
    assert (by_schema, by_model) == (valid, valid)


def test_type_is_required_on_the_wire() -> None:
    event = json.loads(_readme_examples()[0])
    del event["type"]
    assert not jsonschema_rs.validator_for(events_schema()).is_valid(event)
    with pytest.raises(ValueError):
        parse_event(json.dumps(event).encode())


def test_lookalike_schema_events_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["schema", "events"])
    assert exited.value.code == 0
    assert json.loads(capsys.readouterr().out) == events_schema() == schema_for("events")


async def test_the_query_service_serves_the_schema() -> None:
    app = web.Application()
    add_routes(app)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/v1/schema/events")
        assert resp.status == 200
        assert await resp.json() == events_schema()
    assert "/v1/schema/events" in openapi_spec()["paths"]
