"""Schema-driven fuzzing: schemathesis, fed /openapi.json, finds no 500 and no off-schema answer."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from models.embedder import AsyncEmbedder
from query.app import create_app
from query.serve import start_site
from tests.query_support import api_settings, catalog_store, embedder

pytestmark = pytest.mark.slow

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "unsupported_method",
    ]
)


async def test_schemathesis_finds_no_server_errors_and_no_schema_violations(
    tmp_path: Path,
) -> None:
    # Half the generated listing ids name real listings, so filters reach the store, not a 404.
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        "[dictionaries.listings]\n"
        'values = ["P-coffee", "P-chelsea", "G-mug-0"]\n'
        "[parameters]\n"
        '"path.listing_id" = { dictionary = "listings", probability = 0.5 }\n'
    )
    runner_model = AsyncEmbedder(embedder())
    async with catalog_store("edge", tmp_path) as store:
        app = create_app(api_settings(tmp_path), embedder=runner_model, store=store)
        runner, url = await start_site(app, "127.0.0.1", 0)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(config),
                "run",
                f"{url}/openapi.json",
                "--checks",
                CHECKS,
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "100",
                "--seed",
                "20261124",
                "--workers",
                "1",
                "--request-timeout",
                "20",
                "--report",
                "junit",
                "--report-dir",
                str(tmp_path / "report"),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=tmp_path,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
        finally:
            await runner.cleanup()
            runner_model.close()
    text = out.decode(errors="replace")
    print(text[-2500:])
    assert proc.returncode == 0, text[-6000:]
    assert "No issues found" in text, text[-3000:]
