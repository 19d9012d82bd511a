"""Keep the mount's resident memory bounded and its large buffers cheap: glibc malloc settings.

The mount moves megabyte-sized ``bytes`` objects (HTTP bodies, 1 MiB chunks, FUSE replies)
through the trio thread and a disk-writer thread. Two opposite failure modes were measured
streaming 1 GiB on the bench machine:

- glibc's default *dynamic* mmap threshold rises after the first large free (up to 32 MiB),
  and freed buffers then pile up in per-thread arenas that are rarely given back: the
  resident size grew towards everything ever streamed (1.1 GB);
- a small fixed threshold (128 KiB) makes every buffer a fresh mapping: bounded memory, but
  each one is page-faulted and zeroed by the kernel; a third of the mount's CPU went there
  (61 MB/s, 13 s of system time per GiB).

(The 1.1 GB was measured before commit 16003b8 stopped dead HTTP responses from pinning their
bodies, so part of that growth was the leak, not the allocator.)

So: buffers come from the heap (threshold 64 MiB: nothing we allocate is larger), where freed
ones are reused at once without faults; at most ``TRIM_THRESHOLD`` of free memory at the top
of a heap is kept, and two arenas bound fragmentation between threads. The bytes held are
bounded by the cache (``blockcache``), not by the allocator. Measured again after that fix
(a cold 1 GiB stream, then a re-read that bypasses the page cache; three runs each,
alternating): peak RSS 184-189 MB with these settings, 244-260 MB with glibc's defaults, at
the same speed (430-460 MB/s cold).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 4 << 20
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
    settings = {
        _M_MMAP_THRESHOLD: MMAP_THRESHOLD,
        _M_TRIM_THRESHOLD: TRIM_THRESHOLD,
        _M_ARENA_MAX: ARENA_MAX,
    }
    ok = all([bool(mallopt(option, value)) for option, value in settings.items()])
    log.debug("malloc: %s: %s", settings, ok)
    return ok
