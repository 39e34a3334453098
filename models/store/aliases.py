"""Aliases for Qdrant Edge, which has none: a JSON file replaced atomically under a lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from models.store.types import StoreError

ALIASES_FILE = "aliases.json"


class AliasFile:
    """alias -> collection name, in <index_path>/aliases.json. Blocking: call from a thread."""

    def __init__(self, index_path: Path) -> None:
        self._path = index_path / ALIASES_FILE
        self._lock_path = index_path / (ALIASES_FILE + ".lock")

    @property
    def path(self) -> Path:
        return self._path

    def read(self) -> dict[str, str]:
        """Every alias; empty when the file does not exist yet."""
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise StoreError(f"{self._path} is not valid JSON: {e}") from e
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise StoreError(f"{self._path} must map alias names to collection names")
        return data

    def get(self, alias: str) -> str | None:
        return self.read().get(alias)

    def set(self, alias: str, collection: str) -> None:
        """Point alias at collection, whatever it pointed at before."""
        with self._locked():
            aliases = self.read()
            aliases[alias] = collection
            self._write(aliases)

    def set_if_absent(self, alias: str, collection: str) -> str:
        """Point alias at collection unless it is set; returns what it points at now."""
        with self._locked():
            aliases = self.read()
            current = aliases.get(alias)
            if current is not None:
                return current
            aliases[alias] = collection
            self._write(aliases)
            return collection

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Two processes (a reindex job beside the dev stack) must not interleave read-modify-write.
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, aliases: dict[str, str]) -> None:
        # Readers see the old file or the new one, never a torn write.
        fd, tmp = tempfile.mkstemp(prefix=".aliases-", suffix=".tmp", dir=self._path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(aliases, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            Path(tmp).replace(self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
