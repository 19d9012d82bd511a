"""The disk tier: chunks in fixed slots of one data file, indexed by a small SQLite table.

::

    <directory>/
      lock          flock'ed while a mount uses the directory (one mount per directory)
      blocks        slot i holds one chunk at offset i × CHUNK_SIZE (sparse where unused)
      index.sqlite  chunk key → slot, the chunk's run header (start, length, CRC-32 per run)

Why not one record per chunk (diskcache, as before): a cold 1 GiB stream then created 1,024
files and 1,024 SQLite rows, which cost ~40% of the mount's CPU. Here a chunk is one
``pwrite`` into a file that already exists, and index rows are written in batches.

Invariants:

- **Bounded by construction**: there are ``size_limit // CHUNK_SIZE`` slots, so the data file
  never exceeds ``size_limit`` bytes; the index is a few dozen bytes per chunk. A new chunk
  takes a free slot, else the least recently used chunk's slot (its row is deleted in the
  same transaction that adds the new one).
- **Never served corrupt**: every run is checked against its CRC-32 when read. Data is
  written before the index row that describes it, so a crash between the two leaves either
  the old row (whose CRCs no longer match: dropped, fetched again) or no row.
- **Index in memory**: key → (slot, header) for every chunk on disk, so asking whether a chunk
  is on disk costs a dict lookup and no thread hop. Use order is kept in memory and persisted
  with each write (``used``), so after a remount eviction follows last-written order.
- **Thread safety**: every method may run in a worker thread; one lock guards the maps, the
  SQLite connection and the file offsets of a slot while it is read or written.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import struct
import threading
import zlib
from collections import OrderedDict
from pathlib import Path

from remotefs.cache.extents import CHUNK_SIZE, Extents

ChunkKey = tuple[str, str, str, int]

_RUN = struct.Struct("<III")  # start in the chunk, length, crc32


class CacheDirError(Exception):
    """The cache directory cannot be used (not writable, or in use by another mount)."""


def encode_header(extents: Extents) -> bytes:
    return b"".join(
        _RUN.pack(s, len(r), zlib.crc32(r))
        for s, r in zip(extents.starts, extents.runs, strict=True)
    )


def decode_header(header: bytes) -> list[tuple[int, int, int]] | None:
    """``(start, length, crc)`` per run, or None when the header itself is malformed."""
    if len(header) % _RUN.size:
        return None
    runs = [_RUN.unpack_from(header, i) for i in range(0, len(header), _RUN.size)]
    last_end = -1
    for start, length, _ in runs:
        if start <= last_end or length == 0 or start + length > CHUNK_SIZE:
            return None
        last_end = start + length
    return runs


class ChunkStore:
    def __init__(self, directory: Path, *, size_limit: int) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise CacheDirError(f"cache directory {directory}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise CacheDirError(
                f"cache directory {directory} is in use by another mount; give this one its own "
                "--cache-dir"
            ) from None
        self.directory = directory
        self.slots = max(1, size_limit // CHUNK_SIZE)
        self._mutex = threading.Lock()
        self._fd = os.open(directory / "blocks", os.O_RDWR | os.O_CREAT, 0o600)
        self._db = sqlite3.connect(directory / "index.sqlite", check_same_thread=False)
        self._db.executescript(
            # a small WAL: the directory stays within the limit plus one chunk
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA wal_autocheckpoint=64;"
            "PRAGMA journal_size_limit=262144;"
            "CREATE TABLE IF NOT EXISTS chunks (key TEXT PRIMARY KEY, slot INTEGER UNIQUE,"
            " header BLOB NOT NULL, used INTEGER NOT NULL)"
        )
        self._index: OrderedDict[str, tuple[int, bytes]] = OrderedDict()  # LRU first
        self._clock = 0
        self._load()

    def _load(self) -> None:
        rows = self._db.execute("SELECT key, slot, header, used FROM chunks ORDER BY used")
        stale = []
        for key, slot, header, used in rows:
            if slot >= self.slots:  # the limit shrank since: forget chunks beyond it
                stale.append((key,))
                continue
            self._index[key] = (slot, bytes(header))
            self._clock = max(self._clock, used)
        if stale:
            self._db.executemany("DELETE FROM chunks WHERE key = ?", stale)
            self._db.commit()
        os.ftruncate(self._fd, min(os.fstat(self._fd).st_size, self.slots * CHUNK_SIZE))
        used_slots = {slot for slot, _ in self._index.values()}
        self._free = [s for s in range(self.slots - 1, -1, -1) if s not in used_slots]

    def close(self) -> None:
        with self._mutex:
            self._db.close()
            os.close(self._fd)
            os.close(self._lock_fd)

    @staticmethod
    def key_text(key: ChunkKey) -> str:
        return "/".join(map(str, key))

    def __contains__(self, key: ChunkKey) -> bool:
        return self.key_text(key) in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: ChunkKey) -> Extents | None:
        """The chunk's extents if held and intact; a damaged chunk is dropped (None)."""
        text = self.key_text(key)
        with self._mutex:
            found = self._index.get(text)
            if found is None:
                return None
            slot, header = found
            runs = decode_header(header)
            out = Extents()
            for start, length, crc in runs or []:
                data = os.pread(self._fd, length, slot * CHUNK_SIZE + start)
                if len(data) != length or zlib.crc32(data) != crc:
                    runs = None
                    break
                out.starts.append(start)
                out.runs.append(data)
            if runs is None:
                self._drop(text)
                raise DamagedChunk(text)
            self._index.move_to_end(text)
            return out

    def put_many(self, items: list[tuple[ChunkKey, Extents]]) -> None:
        """Write chunks (data first, then one index transaction)."""
        rows = []
        evicted = []
        with self._mutex:
            for key, extents in items:
                text = self.key_text(key)
                found = self._index.pop(text, None)
                if found is not None:
                    slot = found[0]
                elif self._free:
                    slot = self._free.pop()
                else:
                    old, (slot, _) = self._index.popitem(last=False)
                    evicted.append((old,))
                base = slot * CHUNK_SIZE
                for start, run in zip(extents.starts, extents.runs, strict=True):
                    os.pwrite(self._fd, run, base + start)
                header = encode_header(extents)
                self._index[text] = (slot, header)
                self._clock += 1
                rows.append((text, slot, header, self._clock))
            with self._db:
                self._db.executemany("DELETE FROM chunks WHERE key = ?", evicted)
                self._db.executemany(
                    "INSERT OR REPLACE INTO chunks (key, slot, header, used) VALUES (?, ?, ?, ?)",
                    rows,
                )

    def _drop(self, text: str) -> None:
        slot, _ = self._index.pop(text)
        self._free.append(slot)
        with self._db:
            self._db.execute("DELETE FROM chunks WHERE key = ?", (text,))


class DamagedChunk(Exception):
    """A chunk on disk failed its checksum; it has been dropped from the index."""
