"""The byte extents of one cache chunk: which parts of it are held, and their bytes.

A chunk is a fixed-size, aligned slice of a file (``CHUNK_SIZE``). Random readers fill a
chunk piecewise — only what they asked for is fetched — while sequential readers fill it
whole; :class:`Extents` records both the same way: a sorted list of non-overlapping,
non-adjacent ``(start, bytes)`` runs, offsets relative to the chunk.

Invariants: runs are sorted, never overlap and never touch (touching runs are merged), so a
range is cached exactly when one run covers it. Bytes of a file version never change, so when
a new run overlaps an old one the union is built from either without comparison.

On disk (``remotefs.cache.store``) a chunk's runs sit at their offsets in one slot, with a
checksum per 64 KiB piece in the index.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

CHUNK_SIZE = 1 << 20
"""1 MiB: large enough that a sequential stream is one disk record per MiB, small enough that
a random reader's chunk records stay small."""


@dataclass
class Extents:
    starts: list[int] = field(default_factory=list)
    runs: list[bytes] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(len(r) for r in self.runs)

    def get(self, start: int, end: int) -> bytes | None:
        """The bytes ``[start, end)`` if one run holds them all, else None."""
        i = bisect.bisect_right(self.starts, start) - 1
        if i < 0:
            return None
        run_start, run = self.starts[i], self.runs[i]
        if end <= run_start + len(run):
            return run[start - run_start : end - run_start]
        return None

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` that no run holds, in order."""
        gaps = []
        pos = start
        i = max(0, bisect.bisect_right(self.starts, start) - 1)
        while pos < end and i < len(self.starts):
            run_start, run_end = self.starts[i], self.starts[i] + len(self.runs[i])
            if run_end <= pos:
                i += 1
                continue
            if run_start >= end:
                break
            if run_start > pos:
                gaps.append((pos, run_start))
            pos = max(pos, run_end)
            i += 1
        if pos < end:
            gaps.append((pos, end))
        return gaps

    def add(self, start: int, data: bytes) -> None:
        """Hold ``data`` at ``start``, merging with every run it overlaps or touches."""
        end = start + len(data)
        lo = bisect.bisect_left(self.starts, start)
        if lo > 0 and self.starts[lo - 1] + len(self.runs[lo - 1]) >= start:
            lo -= 1
        hi = lo
        left = right = b""
        new_start = start
        while hi < len(self.starts) and self.starts[hi] <= end:
            run_start, run = self.starts[hi], self.runs[hi]
            if run_start < start:
                left = run[: start - run_start]
                new_start = run_start
            if run_start + len(run) > end:
                right = run[end - run_start :]
            hi += 1
        merged = left + data + right if (left or right) else data
        self.starts[lo:hi] = [new_start]
        self.runs[lo:hi] = [merged]
