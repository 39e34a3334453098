"""The writer lease of a Qdrant Edge index: held while a worker writes to it, so a reindex can
refuse to copy a collection that is still changing."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LEASE_FILE = "worker.lock"


class WriterLease:
    """A shared flock on <index_path>/worker.lock: workers hold it shared (any number), and
    `writer_active` asks for it exclusively without waiting. The kernel drops it when the process
    dies, so a killed worker never leaves a stale lease."""

    def __init__(self, index_path: Path) -> None:
        self.path = Path(index_path) / LEASE_FILE
        self._file: IO[str] | None = None

    def hold(self) -> WriterLease:
        """Take the lease (blocking: only a momentary `writer_active` check can hold it)."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lease = self.path.open("a")
            fcntl.flock(lease, fcntl.LOCK_SH)
            self._file = lease
        return self

    def release(self) -> None:
        lease, self._file = self._file, None
        if lease is not None:
            fcntl.flock(lease, fcntl.LOCK_UN)
            lease.close()


def writer_active(index_path: Path) -> bool:
    """Whether a worker holds the index's writer lease now."""
    path = Path(index_path) / LEASE_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the exclusive lock when it was taken
    return False
