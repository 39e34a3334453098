"""Where exported models live on disk: one directory per model, runtime version and code, written
once and published atomically so that concurrent processes never read half an export."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import models.network


def network_digest() -> str:
    """8 hex of the network's source: an export traces the code as well as the weights, so a
    changed network must not be served from an export of the old one under the same model_id."""
    return hashlib.sha256(Path(models.network.__file__).read_bytes()).hexdigest()[:8]


def export_dir(cache_dir: Path, model_id: str, runtime_tag: str) -> Path:
    """<cache_dir>/<model_id>/<runtime_tag>-<network digest>: one export of one model."""
    return cache_dir / model_id / f"{runtime_tag}-{network_digest()}"


def staging_dir(final: Path) -> Path:
    """A fresh private directory next to `final`, on the same file system (for the rename)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    return staging


def publish(staging: Path, final: Path) -> None:
    """Move a finished export into place; when another process got there first, keep theirs."""
    try:
        staging.rename(final)
    except OSError:
        # The destination exists and is not empty: the same export, by a concurrent process.
        shutil.rmtree(staging, ignore_errors=True)
