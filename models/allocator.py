"""glibc's allocator told to hand memory back after a burst of big images (the one libc caller).

glibc serves an allocation above its mmap threshold (128 KiB) from a mapping of its own, which
free() returns at once, but it raises that threshold each time such a block is freed, up to
32 MiB. After one burst of photos, every image buffer of the next comes from the heap arenas
instead, one per thread, and stays resident when freed: a flood of 12 MP uploads left 2 GB
behind. A fixed threshold keeps big buffers mapped; malloc_trim gives back what the arenas
hold after a burst. Elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

log = logging.getLogger(__name__)

# From glibc's malloc.h.
_M_MMAP_THRESHOLD = -3
# Buffers from this size up are mapped on their own: a decoded photo, a Pillow block (16 MiB)
# and an upload's bytes are, the small objects of a request are not.
MMAP_THRESHOLD_BYTES = 1024 * 1024


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None
    return libc


@cache
def keep_big_blocks_mapped() -> bool:
    """Fix the mmap threshold for this process (once); False where that is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    done = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    log.info("allocator: mmap threshold fixed at %d bytes: %s", MMAP_THRESHOLD_BYTES, done)
    return done


def give_back() -> bool:
    """Return the free memory the heap arenas hold to the system (malloc_trim)."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
