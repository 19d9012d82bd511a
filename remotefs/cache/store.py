"""The disk tier: chunks in fixed slots of one data file, indexed by a small SQLite table.

::

    <directory>/
      lock          flock'ed while a mount uses the directory (one mount per directory)
      blocks        slot i holds one chunk at offset i × CHUNK_SIZE (sparse where unused)
      index.sqlite  chunk key → slot, the chunk's header: (start, length, checksum) per piece

Why not one record per chunk (diskcache, as before): a cold 1 GiB stream then created 1,024
files and 1,024 SQLite rows, which cost ~40% of the mount's CPU. Here a chunk is one
``pwrite`` into a file that already exists, and index rows are written in batches.

Invariants:

- **Bounded by construction**: there are ``size_limit // CHUNK_SIZE`` slots, so the data file
  never exceeds ``size_limit`` bytes; the index is a few dozen bytes per chunk. A new chunk
  takes a free slot, else the least recently used chunk's slot (its row is deleted in the
  same transaction that adds the new one).
- **Never served corrupt**: held bytes are cut into pieces on a ``PIECE`` grid, each with
  its checksum (``CHECKSUM``), checked whenever it is read. A reader that misses one page
  reads and checks one 64 KiB piece, not the whole 1 MiB chunk (warm re-reads through the
  mount miss pages here and there). Data is written before the index row that describes it,
  so a crash between the two leaves either the old row (whose checksums no longer match:
  dropped, fetched again) or no row.
- **Writes add**: writing a chunk keeps the pieces already on disk that the new bytes do not
  cover (bytes of a file version never change), so a partial chunk in memory never makes the
  disk forget what it held.
- **Pins**: the chunks of a pinned file (``pin``) are kept apart from the LRU order and are
  never evicted for another chunk; ``drop_file`` forgets a file's chunks and its pin. Pins
  persist (table ``pins``, with the file's size). They are bounded in *slots*, not bytes
  (``PIN_SHARE`` of them, a file taking ``ceil(size / CHUNK_SIZE)`` however small it is),
  so that unpinned slots always remain to evict: ``pin`` refuses what would not fit
  (:class:`PinsTooLarge`, nothing changed), and pins loaded at start that no longer fit (a
  smaller ``--cache-size``) are unpinned, newest first, with one WARNING (their bytes
  stay, evictable).
- **Index in memory**: key → (slot, header) for every chunk on disk, so asking whether a chunk
  is on disk costs a dict lookup and no thread hop. Use order is kept in memory and persisted
  with each write (``used``), so after a remount eviction follows last-written order.
- **Thread safety**: every method may run in a worker thread; one lock guards the maps, the
  SQLite connection and the slots while they are written. Slots are read and checked outside
  it, so that chunks load in parallel (a remount's re-read of 1 GiB: ~600 -> ~670 MB/s): a
  slot given to another chunk during the read fails its checksums and is a miss, not damage.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from remotefs.cache.extents import CHUNK_SIZE, Extents

try:
    import google_crc32c
except ImportError:  # pragma: no cover - a dependency; zlib's CRC-32 then
    google_crc32c = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


def _crc32c(data: bytes | memoryview) -> int:
    return int(google_crc32c.value(bytes(data)))  # it takes bytes, not a memoryview


class Checksum(NamedTuple):
    """A checksum the disk tier can keep, and how an index says it holds it."""

    name: str
    format: int
    """``PRAGMA user_version`` of an index holding it (0, an index from before it was
    recorded, holds CRC-32)."""
    of: Callable[[bytes | memoryview], int]


CRC32 = Checksum("crc32", 1, zlib.crc32)
CRC32C = Checksum("crc32c", 2, _crc32c)
CHECKSUM = CRC32C if google_crc32c is not None and google_crc32c.implementation == "c" else CRC32
"""The pieces' checksum: CRC-32C where google-crc32c's C extension runs (SSE 4.2 or ARMv8
CRC instructions: ~0.1 s of CPU per GiB on the bench machine), else zlib's CRC-32 (~0.53 s
per GiB, for every GiB written and every GiB read back). Both catch the same damage (torn
writes, flipped bits). An index of the other checksum is emptied on open: its chunks would
all fail their checks."""

ChunkKey = tuple[str, str, str, int]
Piece = tuple[int, int, int]  # start in the chunk, length, checksum

PIECE = 64 << 10
"""Checksum granularity: what a reader of one missing page reads and checks."""
_PIECE = struct.Struct("<III")


PIN_SHARE = 0.5
"""Pinned files never take more than this share of the store's slots: the rest stays for
readers."""


class CacheDirError(Exception):
    """The cache directory cannot be used (cannot be created, or in use by another mount)."""


class PinsTooLarge(Exception):
    """Pinning these files would take more slots than ``PIN_SHARE`` of the store."""

    def __init__(self, files: int, slots: int, allowed: int) -> None:
        super().__init__(f"{files} files would take {slots} slots of the {allowed} allowed")
        self.files, self.slots, self.allowed = files, slots, allowed


def slots_of(size: int) -> int:
    """The slots a file of ``size`` bytes takes once held whole (a slot per chunk)."""
    return -(-size // CHUNK_SIZE)


def pieces_of(extents: Extents) -> list[Piece]:
    """The held bytes cut on the ``PIECE`` grid, each with its checksum."""
    out = []
    for start, run in zip(extents.starts, extents.runs, strict=True):
        view = memoryview(run)
        pos = start
        while pos < start + len(run):
            stop = min(start + len(run), (pos // PIECE + 1) * PIECE)
            out.append((pos, stop - pos, CHECKSUM.of(view[pos - start : stop - start])))
            pos = stop
    return out


def encode_header(pieces: list[Piece]) -> bytes:
    return b"".join(_PIECE.pack(*piece) for piece in pieces)


def decode_header(header: bytes) -> list[Piece] | None:
    """The pieces, sorted and disjoint, or None when the header itself is malformed."""
    if len(header) % _PIECE.size:
        return None
    pieces = [_PIECE.unpack_from(header, i) for i in range(0, len(header), _PIECE.size)]
    last_end = 0
    for start, length, _ in pieces:
        if start < last_end or length == 0 or start + length > CHUNK_SIZE:
            return None
        last_end = start + length
    return pieces


def _union(old: list[Piece], new: list[Piece]) -> list[Piece]:
    """``new`` plus the ``old`` pieces none of the new ones overlaps, in order."""
    kept = [p for p in old if not any(p[0] < n[0] + n[1] and n[0] < p[0] + p[1] for n in new)]
    return sorted(kept + new)


class ChunkStore:
    def __init__(self, directory: Path, *, size_limit: int) -> None:
        try:
            for folder in [*reversed(directory.parents), directory]:
                if not folder.exists():
                    folder.mkdir(mode=0o700)  # private, every level we create: file bytes
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
        self.slots = max(1, size_limit // CHUNK_SIZE)
        self.pin_slots = int(self.slots * PIN_SHARE)
        """Slots that pinned files may take, together."""
        self._mutex = threading.Lock()
        self._fd = os.open(directory / "blocks", os.O_RDWR | os.O_CREAT, 0o600)
        self._db = sqlite3.connect(directory / "index.sqlite", check_same_thread=False)
        self._db.executescript(
            # a small WAL: the directory stays within the limit plus one chunk
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA wal_autocheckpoint=64;"
            "PRAGMA journal_size_limit=262144;"
            "CREATE TABLE IF NOT EXISTS chunks (key TEXT PRIMARY KEY, slot INTEGER UNIQUE,"
            " header BLOB NOT NULL, used INTEGER NOT NULL);"
            "CREATE TABLE IF NOT EXISTS pins (file TEXT PRIMARY KEY, size INTEGER NOT NULL)"
        )
        self._check_format(directory)
        self._index: OrderedDict[str, tuple[int, bytes]] = OrderedDict()  # LRU first
        self._pinned: dict[str, tuple[int, bytes]] = {}  # chunks of pinned files: never evicted
        self._pins: dict[str, int] = {}  # pinned file → its size
        self._clock = 0
        self._load()

    def _check_format(self, directory: Path) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if (version or CRC32.format) != CHECKSUM.format:
            with self._db:
                dropped = self._db.execute("DELETE FROM chunks").rowcount
            if dropped > 0:
                log.info(
                    "cache %s: its %d chunks were checked with another checksum than this "
                    "mount's %s; starting empty",
                    directory,
                    dropped,
                    CHECKSUM.name,
                )
        self._db.execute(f"PRAGMA user_version = {CHECKSUM.format}")

    def _load(self) -> None:
        self._pins = dict(self._db.execute("SELECT file, size FROM pins ORDER BY rowid"))
        self._unpin_beyond_budget()
        rows = self._db.execute("SELECT key, slot, header, used FROM chunks ORDER BY used")
        stale = []
        for key, slot, header, used in rows:
            if slot >= self.slots:  # the limit shrank since: forget chunks beyond it
                stale.append((key,))
                continue
            self._held_map(key)[key] = (slot, bytes(header))
            self._clock = max(self._clock, used)
        if stale:
            self._db.executemany("DELETE FROM chunks WHERE key = ?", stale)
            self._db.commit()
        os.ftruncate(self._fd, min(os.fstat(self._fd).st_size, self.slots * CHUNK_SIZE))
        used_slots = {slot for slot, _ in (*self._index.values(), *self._pinned.values())}
        self._free = [s for s in range(self.slots - 1, -1, -1) if s not in used_slots]

    def _unpin_beyond_budget(self) -> None:
        """Unpin the newest pins that no longer fit ``pin_slots`` (the cache shrank since
        they were made); their chunks stay, in the LRU order."""
        kept, used, dropped = {}, 0, []
        for file, size in self._pins.items():  # oldest first (rowid order)
            if used + slots_of(size) <= self.pin_slots:
                kept[file] = size
                used += slots_of(size)
            else:
                dropped.append((file,))
        if not dropped:
            return
        self._pins = kept
        with self._db:
            self._db.executemany("DELETE FROM pins WHERE file = ?", dropped)
        log.warning(
            "cache: %d pinned files no longer fit the %d MiB that pins may take (half of the "
            "cache size); they are unpinned, and their bytes stay in the cache until evicted",
            len(dropped),
            self.pin_slots * CHUNK_SIZE >> 20,
        )

    def close(self) -> None:
        with self._mutex:
            self._db.close()
            os.close(self._fd)
            os.close(self._lock_fd)

    @staticmethod
    def key_text(key: ChunkKey) -> str:
        return "/".join(map(str, key))

    @staticmethod
    def file_text(scope: str, ident: str, version: str) -> str:
        """What names a file's chunks (their key text up to the chunk number)."""
        return f"{scope}/{ident}/{version}"

    def _held_map(self, text: str) -> dict[str, tuple[int, bytes]]:
        """The map a chunk belongs in: pinned, or the LRU order."""
        return self._pinned if text.rsplit("/", 1)[0] in self._pins else self._index

    def _find(self, text: str) -> tuple[int, bytes] | None:
        return self._index.get(text) or self._pinned.get(text)

    def __contains__(self, key: ChunkKey) -> bool:
        return self._find(self.key_text(key)) is not None

    def __len__(self) -> int:
        return len(self._index) + len(self._pinned)

    # --- pins and what a file holds (the mount's warm/check/evict, status) ---------------

    def pins(self) -> dict[str, int]:
        """Pinned files and their sizes."""
        return dict(self._pins)

    def pinned_slots(self) -> int:
        """Slots the pinned files take (or will, once held whole)."""
        return sum(map(slots_of, list(self._pins.values())))

    def pin(self, files: dict[str, int]) -> None:
        """Pin ``files`` (file text → size): their chunks, held and to come, stay.

        Raises:
            PinsTooLarge: the pins would take more than ``pin_slots``; nothing is pinned."""
        with self._mutex:
            after = {**self._pins, **files}
            slots = sum(map(slots_of, after.values()))
            if slots > self.pin_slots:
                new = sum(1 for file in files if file not in self._pins)
                raise PinsTooLarge(new, slots, self.pin_slots)
            # One pass over the index (under the lock: not once per file).
            for text in [t for t in self._index if t.rpartition("/")[0] in files]:
                self._pinned[text] = self._index.pop(text)
            self._pins.update(files)
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO pins (file, size) VALUES (?, ?)", list(files.items())
                )

    def drop_file(self, file: str, chunks: int) -> int:
        """Forget ``file``'s chunks (the first ``chunks``) and its pin; the slots freed."""
        with self._mutex:
            freed = 0
            for chunk in range(chunks):
                text = f"{file}/{chunk}"
                if self._find(text) is not None:
                    self._drop(text, commit=False)
                    freed += 1
            self._pins.pop(file, None)
            with self._db:
                self._db.execute("DELETE FROM pins WHERE file = ?", (file,))
        return freed

    def held_pieces(self, file: str, chunks: int) -> dict[int, list[tuple[int, int]]]:
        """``chunk → [(start, length)]`` of what the disk holds of ``file`` (no I/O)."""
        held = {}
        for chunk in range(chunks):
            found = self._find(f"{file}/{chunk}")
            if found is not None:
                held[chunk] = [(p[0], p[1]) for p in decode_header(found[1]) or []]
        return held

    @property
    def slots_used(self) -> int:
        return len(self._index) + len(self._pinned)

    def holds(self, key: ChunkKey, ranges: list[tuple[int, int]]) -> bool:
        """Whether the disk holds any byte of ``ranges`` of the chunk (no I/O, no lock)."""
        found = self._find(self.key_text(key))
        if found is None:
            return False
        pieces = decode_header(found[1]) or []
        return any(p[0] < b and a < p[0] + p[1] for p in pieces for a, b in ranges)

    def get(self, key: ChunkKey, lo: int = 0, hi: int = CHUNK_SIZE) -> Extents | None:
        """The chunk's held bytes that overlap ``[lo, hi)``, checked (whole pieces; None if
        the chunk is not held). A damaged chunk is dropped and ``DamagedChunk`` raised.

        The slot is read and checked outside the lock, so that several chunks load at once.
        A slot given to another chunk meanwhile fails its checksums: that is a miss (None),
        not damage; damage is what fails while the slot is still the chunk's."""
        text = self.key_text(key)
        with self._mutex:
            found = self._find(text)
            if found is None:
                return None
            if text in self._index:
                self._index.move_to_end(text)
        slot, header = found
        pieces = decode_header(header)
        out = Extents()
        intact = pieces is not None
        wanted = [p for p in pieces or [] if p[0] < hi and lo < p[0] + p[1]]
        for group in _contiguous(wanted):  # one pread per contiguous group of pieces
            first = group[0][0]
            size = group[-1][0] + group[-1][1] - first
            data = os.pread(self._fd, size, slot * CHUNK_SIZE + first)
            view = memoryview(data)
            if len(data) != size or any(
                CHECKSUM.of(view[start - first : start - first + length]) != crc
                for start, length, crc in group
            ):
                intact = False
                break
            out.add(first, data)
        if intact:
            return out
        with self._mutex:
            now = self._find(text)
            if now is None or now[0] != slot:
                return None  # evicted (and the slot reused) while we read: a miss
            self._drop(text)
        raise DamagedChunk(text)

    def put_many(self, items: list[tuple[ChunkKey, Extents]]) -> None:
        """Write chunks (data first, then one index transaction)."""
        rows = []
        evicted = []
        with self._mutex:
            for key, extents in items:
                text = self.key_text(key)
                found = self._index.pop(text, None) or self._pinned.pop(text, None)
                pieces = pieces_of(extents)
                if found is not None:
                    slot = found[0]
                    pieces = _union(decode_header(found[1]) or [], pieces)
                elif self._free:
                    slot = self._free.pop()
                elif not self._index:  # every slot pinned (the caller bounds pins): not kept
                    continue
                else:
                    old, (slot, _) = self._index.popitem(last=False)
                    evicted.append((old,))
                base = slot * CHUNK_SIZE
                for start, run in zip(extents.starts, extents.runs, strict=True):
                    os.pwrite(self._fd, run, base + start)
                header = encode_header(pieces)
                self._held_map(text)[text] = (slot, header)
                self._clock += 1
                rows.append((text, slot, header, self._clock))
            with self._db:
                self._db.executemany("DELETE FROM chunks WHERE key = ?", evicted)
                self._db.executemany(
                    "INSERT OR REPLACE INTO chunks (key, slot, header, used) VALUES (?, ?, ?, ?)",
                    rows,
                )

    def _drop(self, text: str, *, commit: bool = True) -> None:
        slot, _ = self._index.pop(text) if text in self._index else self._pinned.pop(text)
        self._free.append(slot)
        self._db.execute("DELETE FROM chunks WHERE key = ?", (text,))
        if commit:
            self._db.commit()


def _contiguous(pieces: list[Piece]) -> list[list[Piece]]:
    groups: list[list[Piece]] = []
    for piece in pieces:
        if groups and groups[-1][-1][0] + groups[-1][-1][1] == piece[0]:
            groups[-1].append(piece)
        else:
            groups.append([piece])
    return groups


class DamagedChunk(Exception):
    """A chunk on disk failed its checksum; it has been dropped from the index."""
