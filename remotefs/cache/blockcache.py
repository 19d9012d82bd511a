"""The block cache: file bytes by chunk, a memory tier in front of a disk tier, single-flight.

::

    read(entry, offset, size, readahead)
      chunks [offset // C … (end - 1) // C]          C = CHUNK_SIZE (1 MiB)
        memory LRU of chunk Extents (bounded bytes)
          ─▶ disk: remotefs.cache.store, one slot per chunk (size-limited, survives remounts)
            ─▶ fetch the gaps: one ranged request per contiguous gap, exactly the bytes asked
      readahead (per open handle, remotefs.cache.prefetch) says what to fetch ahead, in the
      background, in chunk-aligned requests under a global limit

- **Keys** are ``(scope, id, version, chunk)``: bytes of an old version of a file are never
  served for a new one, and two files never share a chunk.
- **Exact fetches for random readers**: a miss fetches only the missing bytes (the kernel
  already asks for whole pages), so a reader of scattered 4 KiB pieces fetches at most ~2x
  what it reads. Sequential readers are served by read-ahead, in large requests.
- **Single-flight**: every byte range being fetched is registered (``_flights``) before the
  first ``await``; a reader needing bytes in flight waits for that fetch instead of asking
  again, then looks in memory. The fetch is a :class:`~remotefs.concurrency.Flight`, so the
  rule of :mod:`remotefs.concurrency` holds: a waiter receives the fetch's real outcome
  (its bytes, or the platform's error, e.g. access denied) and never its cancellation or
  deadline; a fetch that was cancelled, timed out or never started lands abandoned (in the
  ``finally`` that removes its registration), and its waiters fetch for themselves on their
  own time. Read-ahead runs under the operation timeout of its own. A file whose demand
  fetch just failed for lack of time fails again at once, for a moment, for the handles
  that were open before and have not been told (:class:`~remotefs.concurrency.RecentFailures`):
  the kernel queues the other readers of the same pages behind the failed request, and
  each would wait a deadline of its own.
- **Write-behind**: fetched bytes go to memory at once and to disk in the background (one
  writer task, coalescing repeated writes of a chunk, writing batches in a worker thread);
  reads never wait for the disk. The bytes not yet on disk (being fetched, or waiting for
  the writer) are bounded: a fetch starts only when its bytes fit, and fetches are let in
  one by one as the writer makes room, so the network never stops while the disk catches
  up; a reader's own fetches go before read-ahead. (A fetch reserves its own bytes; storing
  them into a chunk reloaded from disk queues the whole chunk, so the bound may be passed
  by up to a chunk per fetch in flight.) A disk that fails (full, gone) only costs the
  disk tier: the failure is logged and reading goes on.
- **Read-ahead ends with its readers**: each open handle asks for read-ahead in its own
  :class:`ReadAheadGroup`, and a read-ahead fetch remembers every group that asked for it
  (a second stream of the same file shares the fetches already in flight). Releasing a
  handle cancels its group, and with it each fetch no other group still wants, queued or in
  flight (``zcat f.gz | head`` leaves no 48 MiB window to finish; a request cut mid-body
  costs its connection, which is closed, never pooled). What ``open`` prefetches for every
  reader (a file's tail, its index) is wanted outside any group and never given up. A
  reader waiting for a fetch that was given up retries and fetches for itself.
- **The link is measured here**: every ranged request that delivers its bytes is timed from
  being sent (after waiting for room and for a request slot) to its whole body, and
  reported to ``link`` (:class:`~remotefs.cache.link.Link`: round trip, throughput, their
  product). The read-ahead planner sizes streams' windows from it; a read that waited for
  read-ahead in flight says so to its caller (``waited``).
- **Integrity**: the disk tier keeps a checksum (CRC-32C) per 64 KiB piece; a damaged chunk
  is dropped and its bytes fetched again, never served.
- **Exactness**: a read returns exactly ``min(size, entry.size - offset)`` bytes or raises.
- Nothing blocks the trio loop: disk reads and writes run in worker threads; whether a chunk
  is on disk at all is answered from the store's in-memory index.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import trio

from remotefs.cache.extents import CHUNK_SIZE, Extents
from remotefs.cache.link import Link
from remotefs.cache.prefetch import REQUEST_SIZE
from remotefs.cache.store import ChunkStore, DamagedChunk
from remotefs.concurrency import Flight, RecentFailures, before_the_deadline, gather_limited
from remotefs.config import DEFAULT_TIMEOUT
from remotefs.errors import ProtocolError, RemoteError
from remotefs.metrics import METRICS
from remotefs.model import RemoteEntry

log = logging.getLogger(__name__)

_DISK_ERRORS = (OSError, sqlite3.Error)
"""What the disk tier raises when its file or index cannot be written or read."""

MEMORY_BYTES = 56 << 20
"""The memory tier. It holds a stream's read-ahead window (``prefetch.MAX_WINDOW``, 48 MiB:
the bytes a streaming reader has consumed go first, see :meth:`BlockCache.read`) and the
hot head/tail chunks that htslib and HDF5 re-read on every open. With ``UNWRITTEN_BYTES``
it bounds the mount's RSS (target 250 MB; a cold 1 GiB stream peaks at ~190 MB)."""
UNWRITTEN_BYTES = 64 << 20
"""Bytes being fetched or waiting for the disk writer, at most (one fetch larger than this
runs alone). A fetch waits for room *before* it starts: memory stays bounded and the disk
tier complete when the disk writer falls behind (it shares the CPU with everything else).
Room is handed out as the writer makes it, fetch by fetch: readers' own fetches first,
then read-ahead, each first come first served. A bound on pending writes alone, with every
waiter let go at once, sent the requests in waves that each waited a round trip with
nothing in flight: a 40 ms stream ran at ~0.8x of the 0 ms one; now ~0.9x
(``scripts/bench mount --only sequential``, rows 1-2)."""
MAX_PARALLEL_FETCHES = 12
"""Ranged requests in flight at once, all files together (read-ahead and demand): a full
read-ahead window's worth (``MAX_WINDOW`` / ``REQUEST_SIZE``)."""
WRITE_BATCH = 16
"""Chunks written to disk per worker-thread call and index transaction."""

Fetch = Callable[[RemoteEntry, int, int], Awaitable[bytes]]


class FetchLimit(Protocol):
    def allow(self, entry: RemoteEntry, nbytes: int) -> None:
        """Raise if ``nbytes`` of ``entry`` may not be fetched for this reader; else count
        them as fetched."""
        ...

    def refund(self, entry: RemoteEntry, nbytes: int) -> None:
        """``nbytes`` that ``allow`` counted were not fetched after all (the fetch failed)."""
        ...


FileKey = tuple[str, str, str]
ChunkKey = tuple[str, str, str, int]


@dataclass
class _Ticket:
    size: int
    admitted: trio.Event = field(default_factory=trio.Event)


@dataclass(eq=False)
class ReadAheadGroup:
    """The read-ahead one open handle asked for: given up together when the handle goes."""

    cancelled: bool = False
    _flights: set[_Flight] = field(default_factory=set)

    def cancel(self) -> None:
        """Give up this group's interest in its read-ahead: each fetch that no other group
        (and nothing outside a group) still wants is cancelled, queued or in flight; the
        group asks for nothing more."""
        self.cancelled = True
        flights, self._flights = self._flights, set()
        for flight in flights:
            flight.unwanted_by(self)


@dataclass(eq=False)
class _Flight:
    """A byte range being fetched; readers needing it wait for its ``outcome``.

    A read-ahead flight (``scope`` set) runs while something wants it: a group that has not
    been cancelled, or anything outside a group (``kept``: what ``open`` prefetches, for
    every reader). A reader's own fetch has no scope: it is never given up."""

    start: int
    end: int
    outcome: Flight[None] = field(default_factory=Flight)
    scope: trio.CancelScope | None = None
    kept: bool = False
    wanted_by: set[ReadAheadGroup] = field(default_factory=set)

    def want(self, group: ReadAheadGroup | None) -> None:
        if group is None:
            self.kept = True
        else:
            self.wanted_by.add(group)
            group._flights.add(self)

    def unwanted_by(self, group: ReadAheadGroup) -> None:
        self.wanted_by.discard(group)
        if not self.kept and not self.wanted_by and self.scope is not None:
            self.scope.cancel()

    def landed(self) -> None:
        """Done (fetched, failed or cancelled): the groups forget it."""
        for group in self.wanted_by:
            group._flights.discard(self)
        self.wanted_by.clear()
        self.outcome.abandon()  # a no-op when its leader landed it


class BlockCache:
    def __init__(
        self,
        directory: Path,
        *,
        size_limit: int,
        fetch: Fetch,
        namespace: str,
        memory_bytes: int = MEMORY_BYTES,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """``timeout``: the deadline of a read-ahead fetch (a reader's own fetch has its
        operation's)."""
        self.disk = ChunkStore(directory, size_limit=size_limit)
        self.fetch = fetch
        self.namespace = namespace
        self.timeout = timeout
        self.memory_bytes = memory_bytes
        self.limiter = trio.CapacityLimiter(MAX_PARALLEL_FETCHES)
        self.link = Link()
        """What the storage link carries, from the fetches made here (read-ahead sizing)."""
        self._memory: OrderedDict[ChunkKey, Extents] = OrderedDict()
        self._memory_used = 0
        self._flights: dict[FileKey, list[_Flight]] = {}
        self._recent_failures: RecentFailures[FileKey] = RecentFailures()
        self._pending: dict[ChunkKey, Extents] = {}
        self._pending_sizes: dict[ChunkKey, int] = {}  # bytes of each chunk when queued
        self._pending_bytes = 0
        self._in_flight_bytes = 0  # fetches let in and not yet stored
        self._waiting: deque[_Ticket] = deque()  # read-ahead waiting for room, in order
        self._urgent: deque[_Ticket] = deque()  # readers' own fetches waiting: served first
        self._wake_writer = trio.Event()
        self._writing = trio.Event()  # set while no batch is being written
        self._writing.set()
        self._nursery: trio.Nursery | None = None

    # --- life cycle ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the background tasks (disk writer, read-ahead) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._writer)
            task_status.started()
            await trio.sleep_forever()

    def close(self) -> None:
        try:  # best effort: flush what is left
            self.disk.put_many(list(self._pending.items()))
        except _DISK_ERRORS as exc:
            log.warning("cannot write the disk cache: %s", exc)
        self._pending.clear()
        self._pending_sizes.clear()
        self._pending_bytes = 0
        self.disk.close()

    @property
    def memory_in_use(self) -> int:
        """Bytes held by the memory tier (at most ``memory_bytes``, or one chunk)."""
        return self._memory_used

    # --- keys, tiers ------------------------------------------------------------------------

    def _file_key(self, entry: RemoteEntry) -> FileKey:
        return (self.namespace, entry.id, entry.version)

    def _remember(self, key: ChunkKey, extents: Extents) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_used -= old.nbytes
        self._memory[key] = extents
        self._grew(extents.nbytes)

    def _grew(self, added: int) -> None:
        """Account ``added`` bytes to the memory tier, then evict least recently used chunks
        back under its bound (never the newest: it is the one being used). Called wherever
        bytes are added: read-ahead remembers its chunks empty, then fills them."""
        self._memory_used += added
        while self._memory_used > self.memory_bytes and len(self._memory) > 1:
            _, evicted = self._memory.popitem(last=False)
            self._memory_used -= evicted.nbytes

    def _disk_get(self, key: ChunkKey, lo: int, hi: int) -> Extents | None:
        try:
            return self.disk.get(key, lo, hi)
        except DamagedChunk:
            log.warning("cache chunk %s/%s failed its checksum; fetching it again", key[1], key[3])
        except _DISK_ERRORS as exc:
            log.warning("cannot read the disk cache: %s", exc)
        return None

    async def _chunk(self, key: ChunkKey, lo: int = 0, hi: int = 0) -> Extents:
        """The chunk's extents in memory (created empty if need be), completed from the disk
        tier for the part of ``[lo, hi)`` that memory lacks and the disk holds."""
        extents = self._memory.get(key)
        if extents is not None:
            self._memory.move_to_end(key)
        else:
            extents = self._pending.get(key) or Extents()  # pending: evicted, not yet on disk
            self._remember(key, extents)
        missing = extents.missing(lo, hi) if lo < hi else []
        if missing and self.disk.holds(key, missing):
            part = await trio.to_thread.run_sync(self._disk_get, key, lo, hi)
            current = self._memory.get(key)
            if current is None:  # evicted meanwhile: keep the one we have
                current = extents
                self._remember(key, current)
            before = current.nbytes
            for start, run in zip(part.starts, part.runs, strict=True) if part else ():
                current.add(start, run)
            self._grew(current.nbytes - before)
            extents = current
        return extents

    # --- reading ------------------------------------------------------------------------

    async def read(
        self,
        entry: RemoteEntry,
        offset: int,
        size: int,
        *,
        streaming: bool = False,
        since: float = math.inf,
        limit: FetchLimit | None = None,
        waited: Callable[[], None] | None = None,
    ) -> bytes:
        """Exactly ``min(size, entry.size - offset)`` bytes of ``entry`` from ``offset``.

        ``waited``: called when the read had to wait for bytes already being fetched (by
        read-ahead, or another reader) before it could be answered.

        ``limit``: asked before any bytes are fetched for this read (not for bytes held, or
        already in flight), and may refuse (a sniffer's cap); what a failed fetch did not
        bring is refunded to it.

        ``since``: a fetch of this file that failed for lack of time after this moment (and
        a moment ago) is not tried again: its failure is raised at once (the reader was
        queued by the kernel behind it; see ``_obtain``). The default never does that.

        ``streaming``: the reader reads on sequentially (its read-ahead is running). The
        chunks it has now read to their end go to the eviction end of the memory tier: the
        kernel's page cache holds their bytes (``keep_cache``), the disk tier soon, and the
        window ahead needs the room. Kept as most recently used, they would outrank the
        window's chunks (which arrived before them), and those would be evicted before
        being read, then read back from disk."""
        end = min(offset + size, entry.size)
        if offset >= end:
            return b""
        for passes in range(1000):  # bounded: each pass fetches or waits for what is missing
            pieces, gaps = await self._lookup(entry, offset, end)
            if not gaps:
                data = b"".join(pieces)
                if len(data) != end - offset:
                    raise ProtocolError(
                        f"{entry.name}: assembled {len(data)} of {end - offset} bytes"
                    )
                if streaming:
                    self._consumed(entry, offset, end)
                METRICS.read(len(data), hit=passes == 0)
                return data
            if await self._obtain(entry, gaps, since, limit):
                if waited is not None:
                    waited()
                # It waited on others' fetches, and some bytes are still missing: it is a
                # waiter whose leader left, and takes over on its own time (the rule of
                # remotefs.concurrency), not a caller the kernel queued behind a failure.
                since = math.inf
        raise ProtocolError(f"{entry.name}: bytes at {offset} never arrived")

    def _consumed(self, entry: RemoteEntry, start: int, end: int) -> None:
        """Move the chunks that ``[start, end)`` reads to their end to the eviction end."""
        for key, base, _, hi in self._spans(entry, start, end):
            read_to_its_end = hi == CHUNK_SIZE or base + hi == entry.size
            if read_to_its_end and key in self._memory:
                self._memory.move_to_end(key, last=False)

    async def _lookup(
        self, entry: RemoteEntry, start: int, end: int, *, assemble: bool = True
    ) -> tuple[list[bytes], list[tuple[int, int]]]:
        """The bytes held for ``[start, end)`` (memory, then disk) and the gaps, merged.
        ``assemble=False`` (read-ahead) only loads from disk and finds the gaps."""
        pieces: list[bytes] = []
        gaps: list[tuple[int, int]] = []
        for key, base, lo, hi in self._spans(entry, start, end):
            extents = await self._chunk(key, lo, hi)
            missing = extents.missing(lo, hi)
            gaps += [(base + a, base + b) for a, b in missing]
            if assemble and not missing:
                pieces.append(extents.get(lo, hi) or b"")
        return pieces, _merge(gaps)

    def _spans(
        self, entry: RemoteEntry, start: int, end: int
    ) -> Iterator[tuple[ChunkKey, int, int, int]]:
        """Per chunk that ``[start, end)`` touches: its key, its file offset, and the part of
        the range inside it, relative to the chunk."""
        scope, ident, version = self._file_key(entry)
        for chunk in range(start // CHUNK_SIZE, (end - 1) // CHUNK_SIZE + 1):
            base = chunk * CHUNK_SIZE
            lo, hi = max(start, base) - base, min(end, base + CHUNK_SIZE) - base
            yield (scope, ident, version, chunk), base, lo, hi

    async def _obtain(
        self,
        entry: RemoteEntry,
        gaps: list[tuple[int, int]],
        since: float = math.inf,
        limit: FetchLimit | None = None,
        urgent: bool = True,
    ) -> bool:
        """Fetch the gaps not already in flight; wait for those that are. Returns whether
        it waited on fetches of others.

        Returns once every gap was fetched or its fetch landed (a fetch abandoned by its
        leader leaves its bytes missing: the caller looks again and fetches them itself).
        Raises a fetch's shared error, as the caller's own."""
        key = self._file_key(entry)
        flights = self._flights.get(key, [])
        waits = [f for f in flights if any(f.start < b and a < f.end for a, b in gaps)]
        todo = self._not_in_flight(entry, gaps)
        if todo:
            self._recent_failures.check(key, since)  # a reader queued behind a failure
            if limit is not None:
                limit.allow(entry, sum(b - a for a, b in todo))
        try:
            with before_the_deadline(
                lambda: (
                    f"{entry.name}: bytes at {gaps[0][0]} did not "
                    "arrive before the operation's deadline"
                )
            ):
                await self._fetch_and_wait(entry, todo, waits, urgent)
        except BaseException as exc:
            if limit is not None and todo:  # what was charged and did not arrive
                lost = sum(b - a for a, b in todo if not self._held_in_memory(entry, a, b))
                limit.refund(entry, lost)
            if isinstance(exc, RemoteError):
                self._recent_failures.note(key, exc)
            raise
        return bool(waits)

    async def _fetch_and_wait(
        self,
        entry: RemoteEntry,
        todo: list[tuple[int, int]],
        waits: list[_Flight],
        urgent: bool = True,
    ) -> None:
        mine = [self._register(entry, a, b) for a, b in todo]  # before any await
        try:
            fetches = [
                partial(f.outcome.lead, partial(self._fetch_range, entry, f.start, f.end, urgent))
                for f in mine
            ]
            if len(fetches) == 1:  # the common case: no nursery on the read path
                await fetches[0]()
            elif fetches:
                await gather_limited(fetches, len(fetches))  # the first error, as itself
        finally:
            for flight in mine:
                self._unregister(entry, flight)
        for flight in waits:
            await flight.outcome.wait()  # its bytes, its shared error, or abandoned

    def _register(self, entry: RemoteEntry, start: int, end: int) -> _Flight:
        flight = _Flight(start, end)
        self._flights.setdefault(self._file_key(entry), []).append(flight)
        return flight

    def _unregister(self, entry: RemoteEntry, flight: _Flight) -> None:
        key = self._file_key(entry)
        flights = self._flights.get(key, [])
        if flight in flights:
            flights.remove(flight)
        if not flights:
            self._flights.pop(key, None)
        flight.landed()

    async def _fetch_range(
        self, entry: RemoteEntry, start: int, end: int, urgent: bool = False
    ) -> None:
        """Fetch and store ``[start, end)``; ``urgent``: a reader waits for it (not read-ahead)."""
        size = end - start
        await self._admit(size, urgent)
        try:
            async with self.limiter:
                sent = trio.current_time()
                data = await self.fetch(entry, start, size)
            if len(data) != size:
                raise ProtocolError(f"{entry.name}: got {len(data)} bytes at {start}, not {size}")
            self.link.fetched(size, sent, trio.current_time())
            await self._store(entry, start, data)
        finally:
            self._in_flight_bytes -= size
            self._made_room()

    def _fits(self, size: int) -> bool:
        unwritten = self._in_flight_bytes + self._pending_bytes
        return unwritten == 0 or unwritten + size <= UNWRITTEN_BYTES

    async def _admit(self, size: int, urgent: bool) -> None:
        """Wait until ``size`` more unwritten bytes fit, behind the fetches already waiting:
        readers' own fetches first, then read-ahead, each first come, first served (a
        stream's nearest bytes were asked for first). A reader's 4 KiB never waits behind a
        queue of another file's read-ahead."""
        queue = self._urgent if urgent else self._waiting
        if not self._urgent and not queue and self._fits(size):
            self._in_flight_bytes += size
            return
        ticket = _Ticket(size)
        queue.append(ticket)
        try:
            await ticket.admitted.wait()
        except BaseException:  # cancelled: give back the room, or the place in the queue
            if ticket.admitted.is_set():
                self._in_flight_bytes -= size
            else:
                queue.remove(ticket)
            self._made_room()
            raise

    def _made_room(self) -> None:
        """Let in the waiting fetches that now fit, in order (readers' own first)."""
        for queue in (self._urgent, self._waiting):
            while queue and self._fits(queue[0].size):
                ticket = queue.popleft()
                self._in_flight_bytes += ticket.size
                ticket.admitted.set()
            if queue:
                return  # its head does not fit yet: nothing behind it goes first

    async def _store(self, entry: RemoteEntry, start: int, data: bytes) -> None:
        view = memoryview(data)
        for key, base, lo, hi in self._spans(entry, start, start + len(data)):
            extents = await self._chunk(key)  # in memory from here on (no disk load: lo = hi)
            before = extents.nbytes
            extents.add(lo, bytes(view[base + lo - start : base + hi - start]))
            self._queue_write(key, extents)
            self._grew(extents.nbytes - before)

    # --- read-ahead -----------------------------------------------------------------------

    def prefetch(
        self, entry: RemoteEntry, start: int, end: int, group: ReadAheadGroup | None = None
    ) -> None:
        """Fetch ``[start, end)`` in the background unless held; for ``group`` if given
        (given up when the group is cancelled and nothing else wants it), else for good.

        The range is registered as in flight at once (no ``await`` before), so demand reads
        arriving meanwhile wait for it instead of fetching the same bytes in small pieces.
        Read-ahead already in flight for part of it is shared: its wanters now include
        ``group``, so it runs on if the group that started it is cancelled.
        """
        end = min(end, entry.size)
        if self._nursery is None or start >= end or self._held_in_memory(entry, start, end):
            return
        if group is not None and group.cancelled:
            return
        for flight in self._flights.get(self._file_key(entry), []):
            if flight.scope is not None and flight.start < end and start < flight.end:
                flight.want(group)
        for a, b in self._not_in_flight(entry, [(start, end)]):
            flight = self._register(entry, a, b)
            flight.scope = trio.CancelScope()
            flight.want(group)
            self._nursery.start_soon(self._prefetch, entry, flight)

    def _held_in_memory(self, entry: RemoteEntry, start: int, end: int) -> bool:
        for key, _, lo, hi in self._spans(entry, start, end):
            extents = self._memory.get(key)
            if extents is None or extents.missing(lo, hi):
                return False
        return True

    def _not_in_flight(
        self, entry: RemoteEntry, ranges: list[tuple[int, int]]
    ) -> list[tuple[int, int]]:
        flights = sorted(self._flights.get(self._file_key(entry), []), key=lambda f: f.start)
        out = []
        for start, end in ranges:
            pos = start
            for f in flights:
                if f.end <= pos or f.start >= end:
                    continue
                if f.start > pos:
                    out.append((pos, f.start))
                pos = max(pos, f.end)
            if pos < end:
                out.append((pos, end))
        return out

    async def _prefetch(self, entry: RemoteEntry, flight: _Flight) -> None:
        assert flight.scope is not None
        # The scope may be cancelled already: then it stops at its first checkpoint.
        with flight.scope, trio.move_on_after(self.timeout):
            try:
                await flight.outcome.lead(partial(self._fill, entry, flight.start, flight.end))
            except Exception as exc:
                log.debug(
                    "read-ahead of %s [%d, %d) failed: %s",
                    entry.name,
                    flight.start,
                    flight.end,
                    exc,
                )
            finally:
                self._unregister(entry, flight)

    async def _fill(self, entry: RemoteEntry, start: int, end: int) -> None:
        """Fetch what is missing of ``[start, end)`` (read-ahead: not urgent)."""
        _, gaps = await self._lookup(entry, start, end, assemble=False)
        for a, b in gaps:
            await self._fetch_range(entry, a, b)

    # --- whole files: what is held, warm, pin, evict (remotefs warm, status) -------------

    def _chunk_count(self, entry: RemoteEntry) -> int:
        return (entry.size + CHUNK_SIZE - 1) // CHUNK_SIZE

    def _file_text(self, entry: RemoteEntry) -> str:
        return ChunkStore.file_text(*self._file_key(entry))

    def held_bytes(self, entry: RemoteEntry) -> int:
        """Bytes of ``entry`` held (memory, waiting for the disk, or on disk); no I/O."""
        scope, ident, version = self._file_key(entry)
        on_disk = self.disk.held_pieces(self._file_text(entry), self._chunk_count(entry))
        total = 0
        for chunk in range(self._chunk_count(entry)):
            ranges = [(start, start + length) for start, length in on_disk.get(chunk, [])]
            key = (scope, ident, version, chunk)
            for extents in (self._memory.get(key), self._pending.get(key)):
                if extents is not None:
                    ranges += [
                        (s, s + len(r)) for s, r in zip(extents.starts, extents.runs, strict=True)
                    ]
            total += sum(b - a for a, b in _merge(sorted(ranges)))
        return min(total, entry.size)

    def pins(self) -> dict[str, int]:
        """Pinned files (their chunk-key prefix) and their sizes."""
        return self.disk.pins()

    def pinned(self, entry: RemoteEntry) -> bool:
        return self._file_text(entry) in self.disk.pins()

    async def pin(self, entries: list[RemoteEntry]) -> None:
        """Pin ``entries``, all or none: ``PinsTooLarge`` if they would not fit."""
        files = {self._file_text(e): e.size for e in entries}
        await trio.to_thread.run_sync(self.disk.pin, files)

    async def warm(self, entry: RemoteEntry, *, jobs: int, progress: Callable[[int], None]) -> None:
        """Fetch what is missing of ``entry`` (in ``REQUEST_SIZE`` pieces, ``jobs`` at once,
        behind readers' own fetches), calling ``progress(nbytes)`` as each piece is held.
        Each piece has the operation timeout; the first failure is raised."""

        async def piece(start: int, end: int) -> None:
            with trio.fail_after(self.timeout):
                for _ in range(100):
                    _, gaps = await self._lookup(entry, start, end, assemble=False)
                    if not gaps:
                        break
                    await self._obtain(entry, gaps, urgent=False)
            progress(end - start)

        limiter = trio.CapacityLimiter(jobs)

        async def limited(start: int, end: int) -> None:
            async with limiter:
                await piece(start, end)

        pieces = [
            (start, min(entry.size, start + REQUEST_SIZE))
            for start in range(0, entry.size, REQUEST_SIZE)
        ]
        await gather_limited([partial(limited, a, b) for a, b in pieces], len(pieces) or 1)

    async def evict(self, entry: RemoteEntry) -> None:
        """Forget every byte of ``entry`` (memory, unwritten, disk) and its pin."""
        scope, ident, version = self._file_key(entry)
        for _ in range(2):  # again once a batch being written meanwhile has landed
            for chunk in range(self._chunk_count(entry)):
                key = (scope, ident, version, chunk)
                extents = self._memory.pop(key, None)
                if extents is not None:
                    self._memory_used -= extents.nbytes
                if self._pending.pop(key, None) is not None:
                    self._pending_bytes -= self._pending_sizes.pop(key)
            await trio.to_thread.run_sync(
                self.disk.drop_file, self._file_text(entry), self._chunk_count(entry)
            )
            await self._writing.wait()
        self._made_room()

    def in_flight(self) -> tuple[int, int]:
        """Fetches in flight (ranges registered) and the bytes being fetched."""
        return sum(len(f) for f in self._flights.values()), self._in_flight_bytes

    # --- disk writer ------------------------------------------------------------------------

    def _queue_write(self, key: ChunkKey, extents: Extents) -> None:
        size = extents.nbytes
        self._pending_bytes += size - self._pending_sizes.get(key, 0)
        self._pending_sizes[key] = size
        self._pending[key] = extents
        self._wake_writer.set()

    async def _writer(self) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer = trio.Event()
            while self._pending:
                self._writing = trio.Event()
                batch = [
                    (key, extents, Extents(list(extents.starts), list(extents.runs)))
                    for key, extents in list(self._pending.items())[:WRITE_BATCH]
                ]
                try:
                    await trio.to_thread.run_sync(
                        self.disk.put_many, [(key, snap) for key, _, snap in batch]
                    )
                except _DISK_ERRORS as exc:
                    log.warning("cannot write the disk cache: %s", exc)
                for key, extents, snapshot in batch:
                    if self._pending.get(key) is extents and extents.nbytes == snapshot.nbytes:
                        del self._pending[key]
                        self._pending_bytes -= self._pending_sizes.pop(key)
                    elif key in self._pending:  # grew meanwhile: write it again, after the others
                        self._pending[key] = self._pending.pop(key)
                self._writing.set()
                self._made_room()


def _merge(gaps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted gaps, touching ones joined (one request each)."""
    out: list[tuple[int, int]] = []
    for start, end in gaps:
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out
