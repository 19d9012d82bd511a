"""The block cache: file bytes in fixed-size blocks, memory tier in front of a disk tier.

::

    read(entry, offset, size)
      blocks [offset // B … (offset + size - 1) // B]
        memory LRU (bounded bytes) ─▶ disk (diskcache, size-limited, survives remounts)
          ─▶ fetch: each run of consecutive missing blocks is ONE ranged request

- **Keys** are ``(namespace, id, version, block number)``: bytes of an old version of a file
  are never served for a new one, and two files never share a block.
- **Single-flight**: a block being fetched is registered in ``_inflight`` with an event;
  another reader of the same block waits for that fetch instead of sending its own request,
  then reads the block from memory. The registration is removed in a ``finally``, so a failed
  or cancelled fetch never leaves waiters hanging: they retry the lookup and fetch themselves.
- **Integrity**: every block on disk is stored with its length and a BLAKE2b digest; a block
  that does not verify (truncated or altered on disk) is discarded and fetched again.
- **Exactness**: a read returns exactly ``min(size, entry.size - offset)`` bytes or raises;
  a backend answer of the wrong length is a ``ProtocolError``, never a short read.
- Blocking diskcache calls run in worker threads (``trio.to_thread``); nothing blocks the
  trio loop.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

import diskcache
import trio

from remotefs.errors import ProtocolError
from remotefs.model import RemoteEntry

log = logging.getLogger(__name__)

BLOCK_SIZE = 1 << 20
"""1 MiB: one round trip brings a useful amount; a 128 KiB kernel read touches 1–2 blocks."""
MEMORY_BYTES = 256 << 20
"""The memory tier; holds the hot head/tail blocks htslib and HDF5 re-read on every open."""
_DIGEST = 16

Fetch = Callable[[RemoteEntry, int, int], Awaitable[bytes]]
Key = tuple[str, str, str, int]


class BlockCache:
    def __init__(
        self,
        directory: Path,
        *,
        size_limit: int,
        fetch: Fetch,
        namespace: str,
        block_size: int = BLOCK_SIZE,
        memory_bytes: int = MEMORY_BYTES,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.disk = diskcache.Cache(
            str(directory), size_limit=size_limit, eviction_policy="least-recently-used"
        )
        self.fetch = fetch
        self.namespace = namespace
        self.block_size = block_size
        self.memory_bytes = memory_bytes
        self._memory: OrderedDict[Key, bytes] = OrderedDict()
        self._memory_used = 0
        self._inflight: dict[Key, trio.Event] = {}
        self.hits = self.misses = 0

    def close(self) -> None:
        self.disk.close()

    def _key(self, entry: RemoteEntry, block: int) -> Key:
        return (self.namespace, entry.id, entry.version, block)

    # --- tiers ------------------------------------------------------------------------

    def _remember(self, key: Key, data: bytes) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_used -= len(old)
        self._memory[key] = data
        self._memory_used += len(data)
        while self._memory_used > self.memory_bytes and self._memory:
            _, evicted = self._memory.popitem(last=False)
            self._memory_used -= len(evicted)

    def _from_memory(self, key: Key) -> bytes | None:
        data = self._memory.get(key)
        if data is not None:
            self._memory.move_to_end(key)
        return data

    def _disk_get(self, key: Key) -> bytes | None:
        stored = self.disk.get("/".join(map(str, key)))
        if not isinstance(stored, bytes) or len(stored) < _DIGEST:
            return None
        digest, data = stored[:_DIGEST], stored[_DIGEST:]
        if hashlib.blake2b(data, digest_size=_DIGEST).digest() != digest:
            log.warning("cache block %s failed its checksum; fetching it again", key[1:])
            self.disk.delete("/".join(map(str, key)))
            return None
        return data

    def _disk_set(self, key: Key, data: bytes) -> None:
        digest = hashlib.blake2b(data, digest_size=_DIGEST).digest()
        self.disk.set("/".join(map(str, key)), digest + data)

    # --- read ---------------------------------------------------------------------------

    def _block_len(self, entry: RemoteEntry, block: int) -> int:
        return min(self.block_size, entry.size - block * self.block_size)

    async def read(self, entry: RemoteEntry, offset: int, size: int) -> bytes:
        """Exactly ``min(size, entry.size - offset)`` bytes of ``entry`` from ``offset``."""
        end = min(offset + size, entry.size)
        if offset >= end:
            return b""
        first, last = offset // self.block_size, (end - 1) // self.block_size
        blocks = await self._blocks(entry, first, last)
        data = b"".join(blocks)
        start = offset - first * self.block_size
        out = data[start : start + (end - offset)]
        if len(out) != end - offset:
            raise ProtocolError(
                f"{entry.name}: assembled {len(out)} bytes, expected {end - offset}"
            )
        return out

    async def _blocks(self, entry: RemoteEntry, first: int, last: int) -> list[bytes]:
        found: dict[int, bytes] = {}
        while True:
            missing = []
            for block in range(first, last + 1):
                if block in found:
                    continue
                data = self._from_memory(self._key(entry, block))
                if data is not None:
                    found[block] = data
                    self.hits += 1
                else:
                    missing.append(block)
            if not missing:
                return [found[b] for b in range(first, last + 1)]
            # Disk tier, then single-flight fetches of what is still missing.
            waits: list[trio.Event] = []
            mine: list[int] = []
            for block in missing:
                key = self._key(entry, block)
                event = self._inflight.get(key)
                if event is not None:
                    waits.append(event)
                    continue
                data = await trio.to_thread.run_sync(self._disk_get, key)
                if data is not None and len(data) == self._block_len(entry, block):
                    self._remember(key, data)
                    found[block] = data
                    self.hits += 1
                elif key not in self._inflight:
                    self._inflight[key] = trio.Event()
                    mine.append(block)
                else:
                    waits.append(self._inflight[key])
            if mine:
                await self._fetch_runs(entry, mine)
            for event in waits:
                await event.wait()
            # Loop: blocks fetched here or by others are now in memory (or a fetch failed and
            # this reader becomes the fetcher on the next pass).

    async def _fetch_runs(self, entry: RemoteEntry, blocks: list[int]) -> None:
        runs: list[list[int]] = []
        for block in blocks:
            if runs and runs[-1][-1] == block - 1:
                runs[-1].append(block)
            else:
                runs.append([block])
        try:
            if len(runs) == 1:
                await self._fetch_run(entry, runs[0])
            else:
                try:
                    async with trio.open_nursery() as nursery:
                        for run in runs:
                            nursery.start_soon(self._fetch_run, entry, run)
                except BaseExceptionGroup as group:
                    raise first_leaf(group) from None
        finally:
            for block in blocks:
                event = self._inflight.pop(self._key(entry, block), None)
                if event is not None:
                    event.set()

    async def _fetch_run(self, entry: RemoteEntry, run: list[int]) -> None:
        start = run[0] * self.block_size
        length = sum(self._block_len(entry, b) for b in run)
        self.misses += len(run)
        data = await self.fetch(entry, start, length)
        if len(data) != length:
            raise ProtocolError(
                f"{entry.name}: got {len(data)} bytes at {start}, expected {length}"
            )
        pos = 0
        for block in run:
            n = self._block_len(entry, block)
            piece = data[pos : pos + n]
            pos += n
            key = self._key(entry, block)
            self._remember(key, piece)
            await trio.to_thread.run_sync(self._disk_set, key, piece)


def first_leaf(group: BaseExceptionGroup) -> BaseException:  # type: ignore[type-arg]
    """The first real error of a nursery's exception group (our callers want one error)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return first_leaf(exc)
        if not isinstance(exc, trio.Cancelled):
            return exc
    return group.exceptions[0]
