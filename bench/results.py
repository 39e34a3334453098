"""Where a bench leaves its figures: one JSON file, its folder made if need be."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save(path: Path, result: dict[str, Any]) -> None:
    """Write `result` as indented JSON at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
