"""File contents the emulator serves: bytes on disk, or bytes generated on demand.

A generated file costs no disk and no memory beyond one shared pattern: its bytes are a
deterministic function of ``(seed, offset)``, so a test can compute the expected bytes of
any range without the emulator (``GeneratedContent(size, seed).read(start, length)``).

Layout of a generated file: it is cut into 1 MiB chunks. Chunk ``k`` is a 1 MiB window of a
2 MiB pseudo-random pattern (made once per seed) at a shift that depends on ``k``, with the
chunk number and the seed written big-endian into its first 16 bytes. So no two chunks of a
file are equal, and a reader that returns the wrong chunk, or a right chunk at the wrong
offset, is caught by a byte comparison.

Invariants: ``read`` never returns more than asked and returns exactly
``min(length, size - start)`` bytes; ``iter_range`` yields the same bytes in pieces of at most
``CHUNK`` bytes, so a server can stream a 1 GiB body with bounded memory.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CHUNK = 1 << 20
"""Generated files are built from 1 MiB chunks; servers stream in pieces of this size."""

_PATTERN = 2 * CHUNK


class Content(Protocol):
    """The bytes of one emulated file."""

    @property
    def size(self) -> int: ...

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        """Yield the bytes ``[start, end)`` in pieces of at most ``CHUNK`` bytes."""
        ...


@functools.lru_cache(maxsize=8)
def _pattern(seed: int) -> bytes:
    return random.Random(seed).randbytes(_PATTERN)


@dataclass(frozen=True)
class GeneratedContent:
    """Deterministic pseudo-random bytes of a given size (see the module docstring)."""

    size: int
    seed: int = 0

    def _chunk(self, k: int) -> bytes:
        pattern = _pattern(self.seed)
        shift = (k * 40_503 * 64) % CHUNK
        head = k.to_bytes(8, "big") + self.seed.to_bytes(8, "big", signed=True)
        return head + pattern[shift + 16 : shift + CHUNK]

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        end = min(end, self.size)
        pos = start
        while pos < end:
            k, inner = divmod(pos, CHUNK)
            take = min(CHUNK - inner, end - pos)
            chunk = self._chunk(k)
            yield chunk if (inner == 0 and take == CHUNK) else chunk[inner : inner + take]
            pos += take

    def read(self, start: int, length: int) -> bytes:
        """Return ``min(length, size - start)`` bytes from ``start``."""
        return b"".join(self.iter_range(start, start + length))


@dataclass(frozen=True)
class DiskContent:
    """The bytes of a regular file on disk, read when asked (the file may be large)."""

    path: Path
    size: int

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        end = min(end, self.size)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(start)
            pos = start
            while pos < end:
                piece = f.read(min(CHUNK, end - pos))
                if not piece:  # the file shrank under us: never pad, never loop
                    raise OSError(f"{self.path.name}: shorter than its listed size")
                yield piece
                pos += len(piece)

    def read(self, start: int, length: int) -> bytes:
        return b"".join(self.iter_range(start, start + length))


def disk_content(path: Path) -> DiskContent:
    return DiskContent(path, os.stat(path).st_size)
