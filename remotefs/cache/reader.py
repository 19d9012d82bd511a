"""The read policy of a mount, in one place: the FUSE adapter makes one call per open, per
read and per release, and everything a read decides happens here.

::

    Reader.open(entry, name, sibling)        → OpenFile
      fetch what every reader of this file reads first (cache.hints): its tail, or all of
      it when small, and its index (found among its siblings by name); for good, not for
      this handle
    OpenFile.read(offset, size)              → exactly the bytes
      the handle's read-ahead state (cache.prefetch.ReadAhead) records the read and says
      what to fetch ahead (a stream's window sized to the link the block cache measured,
      cache.link); the block cache fetches that in the background for this handle's
      ReadAheadGroup, then serves the read (memory, disk, or a fetch of exactly the
      missing bytes), telling the read-ahead state if it waited for bytes in flight
    OpenFile.close()
      the handle's read-ahead is given up (what open fetched stays)

A **sniffer's** handle (a file manager, thumbnailer or indexer: ``remotefs.fs.callers``)
gets none of that: no open-time fetch, no read-ahead (and the adapter opens it with
``direct_io``, so the kernel adds none either): exactly the bytes it reads, and at most
``SnifferLimit.per_file`` fetched bytes per file (held bytes are free, and bytes whose fetch
failed are given back), beyond which its reads fail (EIO). Sniffers together spend at most
``SNIFFER_API_PER_MINUTE`` API requests (SB: a signed URL for a file no ordinary reader has
opened); past that, such files fail (EIO) until the minute has passed.

:mod:`remotefs.cache.hints` (which names get which open-time ranges) and
:mod:`remotefs.cache.prefetch` (the read-ahead state machine) are pure policy helpers used
only from here; :class:`~remotefs.cache.blockcache.BlockCache` is the mechanism (bytes,
flights, limits) and knows nothing of handles.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import trio

from remotefs.cache.blockcache import BlockCache, ReadAheadGroup
from remotefs.cache.hints import INDEX_BYTES, companion_names, open_ranges, seek_bytes
from remotefs.cache.prefetch import ReadAhead
from remotefs.errors import Transient, Withheld
from remotefs.model import RemoteEntry

KERNEL_RETRY = 0.1
"""Seconds after a failed read within which the same handle's next request is the kernel's
own retry (it re-reads a page whose read-ahead failed, at once, in the same system call)."""

Sibling = Callable[[bytes], RemoteEntry | None]
"""The entry of a name in the folder the file was opened from, if the folder is known."""


SNIFFER_API_PER_MINUTE = 4
"""API requests that sniffers together may cause per minute (SB: a ``download_info`` for a
file no ordinary reader has opened). A file manager opening a folder of 43 files spends at
most this; ``file x.bam`` typed by hand still gets its answer."""


class SnifferLimit:
    """What sniffers may cost: ``per_file`` fetched bytes per file, and together at most
    ``api_per_minute`` API requests."""

    REMEMBERED = 100_000

    def __init__(
        self,
        per_file: int,
        reachable_without_api: Callable[[RemoteEntry], bool],
        api_per_minute: int = SNIFFER_API_PER_MINUTE,
    ) -> None:
        self.per_file = per_file
        self._reachable = reachable_without_api
        self._api_per_minute = api_per_minute
        self._api_spent: deque[float] = deque()
        self._fetched: dict[str, int] = {}

    def allow(self, entry: RemoteEntry, nbytes: int) -> None:
        spent = self._fetched.get(entry.id, 0)
        if spent + nbytes > self.per_file:
            raise Withheld(
                f"{entry.name}: past the {self.per_file} bytes a file manager or indexer may fetch"
            )
        if not self._reachable(entry):
            self._spend_api(entry)
        if len(self._fetched) >= self.REMEMBERED:
            self._fetched.clear()
        self._fetched[entry.id] = spent + nbytes

    def refund(self, entry: RemoteEntry, nbytes: int) -> None:
        """Bytes counted by ``allow`` whose fetch failed: they may be asked for again. (An
        API request is not refunded: it was sent, or tried, and the platform counts it.)"""
        spent = self._fetched.get(entry.id, 0)
        self._fetched[entry.id] = max(0, spent - nbytes)

    def _spend_api(self, entry: RemoteEntry) -> None:
        now = trio.current_time()
        while self._api_spent and self._api_spent[0] <= now - 60:
            self._api_spent.popleft()
        if len(self._api_spent) >= self._api_per_minute:
            raise Withheld(
                f"{entry.name}: file managers and indexers have spent their "
                f"{self._api_per_minute} API requests this minute"
            )
        self._api_spent.append(now)


class OpenFile:
    """One open handle's reading: its file version, read-ahead state and read-ahead group."""

    __slots__ = ("_cache", "_group", "_limit", "_opened", "_readahead", "_told", "entry")

    def __init__(
        self,
        cache: BlockCache,
        entry: RemoteEntry,
        name: bytes,
        limit: SnifferLimit | None = None,
    ) -> None:
        self._cache = cache
        self.entry = entry
        """The version opened: every read of this handle is of these bytes."""
        self._limit = limit
        """A sniffer's handle: exact ranges, under this limit."""
        self._readahead = ReadAhead(seek_bytes=seek_bytes(name))
        self._group = ReadAheadGroup()
        self._opened = trio.current_time()
        self._told = -math.inf
        """When this handle was last answered with a failure for lack of time."""

    async def read(self, offset: int, size: int) -> bytes:
        """Exactly ``min(size, entry.size - offset)`` bytes from ``offset``, or an error."""
        readahead = self._readahead
        if self._limit is None:
            bdp = self._cache.link.bdp
            for start, end in readahead.plan(offset, size, self.entry.size, bdp):
                self._cache.prefetch(self.entry, start, end, self._group)
        try:
            return await self._cache.read(
                self.entry,
                offset,
                size,
                streaming=readahead.window > 0,
                since=self._since(),
                limit=self._limit,
                waited=readahead.waited,
            )
        except Transient:
            self._told = trio.current_time()
            raise

    def _since(self) -> float:
        """The moment up to which this handle's reader knows the file's failures.

        A fetch of the file that failed for lack of time after it, a moment ago, is answered
        again at once (``BlockCache.read``): the kernel queued this read behind the failed
        one. A handle opened after the failure (a user trying again) knows it; so does one
        that was answered with it, except within ``KERNEL_RETRY`` of that answer, when the
        request is the kernel retrying a failed read-ahead page by itself."""
        if trio.current_time() - self._told < KERNEL_RETRY:
            return self._opened
        return max(self._opened, self._told)

    def close(self) -> None:
        """Give up this handle's read-ahead (fetches another handle shares run on)."""
        self._group.cancel()


class Reader:
    def __init__(self, cache: BlockCache, sniffers: SnifferLimit | None = None) -> None:
        self.cache = cache
        self.sniffers = sniffers

    @property
    def sniffers_limited(self) -> bool:
        return self.sniffers is not None

    def open(
        self, entry: RemoteEntry, name: bytes, sibling: Sibling, *, sniffer: bool = False
    ) -> OpenFile:
        """A handle on ``entry`` (named ``name`` where it was opened), with what every reader
        of it reads first already on its way; for a ``sniffer``, exactly what it reads."""
        if sniffer and self.sniffers is not None:
            return OpenFile(self.cache, entry, name, self.sniffers)
        for start, end in open_ranges(name, entry.size):
            self.cache.prefetch(entry, start, end)
        for candidate in companion_names(name):
            index = sibling(candidate)
            if index is not None and not index.is_dir and 0 < index.size <= INDEX_BYTES:
                self.cache.prefetch(index, 0, index.size)
                break
        return OpenFile(self.cache, entry, name)
