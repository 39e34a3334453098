"""Runs `lookalike` as a user does, in a process of its own: a command configures the
process's logging, which in the test run would outlive the test."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path


async def run_cli(
    *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None, within_s: float = 300
) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `python -m lookalike ARGV` with ENV over os.environ;
    killed after WITHIN_S."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lookalike",
        *argv,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
