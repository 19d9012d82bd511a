"""Keep the mount's resident memory bounded: glibc malloc settings for large buffers.

The mount moves megabyte-sized ``bytes`` objects through several threads. glibc's default
*dynamic* mmap threshold rises after the first large free (up to 32 MiB), after which such
buffers come from per-thread heaps that are rarely given back to the system: the resident
size then grows towards everything ever streamed (measured: 1.1 GB after reading 1 GiB,
for a cache whose memory tier is 96 MiB). Fixing the threshold at 128 KiB makes every large
buffer its own mapping, returned to the system when freed, and capping the arenas bounds
fragmentation between threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 << 10
ARENA_MAX = 2


def bound_malloc() -> bool:
    """Apply the settings; False where glibc's ``mallopt`` is not available."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_ARENA_MAX, ARENA_MAX))
    log.debug("malloc: mmap threshold %d, arenas %d: %s", MMAP_THRESHOLD, ARENA_MAX, ok)
    return ok
