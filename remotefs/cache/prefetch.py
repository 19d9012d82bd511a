"""Read-ahead for one open file: detect sequential reading, grow a window, reset on a jump.

The kernel turns a sequential reader (cat, md5sum, zcat, cp) into FUSE reads of up to its
read-ahead (1 MiB when the mount could raise it, else 128 KiB) that may arrive slightly out
of order (async readahead and a multi-threaded kernel side). So a read counts as sequential
when it starts within ``TOLERANCE`` of where the previous reads reached, not only exactly
there.

State machine, per handle:

- a sequential read grows the window to twice the bytes read in the current streak (from
  ``INITIAL_WINDOW`` up to ``MAX_WINDOW``; once, not twice, for BGZF, see below) and asks
  the cache to hold
  ``[reached, reached + window)``: the bytes are fetched in the
  background in chunk-aligned requests of at most ``REQUEST_SIZE``, several at once under the
  cache's global limit;
- once the streak is a stream (``STREAM_BYTES`` read in a row, and past ``seek_bytes``),
  the window is also at least ``MARGIN`` times the link's bandwidth-delay product
  (``remotefs.cache.link``: throughput x round trip, measured by the block cache from its
  fetches), and each time its reader is found waiting for read-ahead still in flight
  (``waited``) at least twice what it was: a stream on a long round trip reaches the
  window it needs in a round trip or two instead of ramping up with the streak. Still at
  most ``MAX_WINDOW``;
- any other read (a seek) resets the window to zero: random readers (HDF5, a random
  ``pread`` benchmark) never pay for bytes they do not read. Only for formats known to be
  read on from a seek (BGZF: samtools/bcftools/tabix jump to a block and decompress a few
  blocks onwards) is ``seek_bytes`` fetched at once from the seek's offset, which saves a round
  trip per region. Their window then equals the streak rather than twice it: the kernel's
  own read-ahead already runs up to 1 MiB past what samtools decompresses, and doubling that
  fetched 3 MB nobody read per 100 kb region (7.1 MB in all; 5.8 MB with the streak).

Random readers fetch no more than without the link: HDF5 and a random ``pread`` never
have a streak, and samtools' region (a seek, ``seek_bytes``, a few blocks read on: ~830 KB
for a 100 kb region) stays far below ``STREAM_BYTES``; only a stream that is already
sequential gets the latency-sized window.

Only the part of the window not asked for before is requested again (``_asked``), so a stream
of small reads costs one prefetch call per newly uncovered stretch, not one per read.
"""

from __future__ import annotations

from dataclasses import dataclass

from remotefs.cache.extents import CHUNK_SIZE

INITIAL_WINDOW = 1 << 20
"""The smallest read-ahead, from the second read of a streak (for BGZF, once the streak has
passed ``seek_bytes``). A random reader pays for it only when two of its reads land within
``TOLERANCE`` of each other."""
MAX_WINDOW = 48 << 20
"""Bytes ahead of the reader at most. At 40 ms per request a stream needs ~25 MiB in flight
to keep up with its 0 ms speed on the 2-core bench machine; with 24 MiB it ran at ~0.8x of
it, with 48 MiB ~0.9x. It bounds the memory a stream holds (``blockcache.MEMORY_BYTES``)."""
STREAM_BYTES = 4 << 20
"""Bytes read in a row (beyond ``seek_bytes``) from which a streak is a stream and its window
is sized to the link: dd's fourth 1 MiB read, never a samtools region (< 1 MB) or HDF5."""
MARGIN = 2
"""A stream's window is at least this many bandwidth-delay products: one for the bytes on
their way, one for a round trip that is slower than the quickest (the estimate is the
windowed minimum) or a transfer that falls behind."""
REQUEST_SIZE = 4 << 20
"""Bytes per read-ahead request at most: few round trips, a body small enough to buffer."""
TOLERANCE = 2 << 20
"""How far from the reached offset a read may start and still count as sequential."""


@dataclass
class ReadAhead:
    reached: int = -1
    streak: int = 0
    window: int = 0
    asked: int = 0
    seek_bytes: int = 0
    """Bytes fetched from the offset of a seek (0: just what is read). Set from
    ``cache.hints.seek_bytes`` for formats read in blocks after a seek (BGZF)."""
    boost: int = 0
    """The window this stream has earned by waiting for its read-ahead (``waited``)."""

    @property
    def streaming(self) -> bool:
        """The current streak is a stream: its window may be sized to the link."""
        return self.streak >= max(STREAM_BYTES, self.seek_bytes)

    def waited(self) -> None:
        """The reader waited for read-ahead still in flight: a stream's window doubles (up
        to ``MAX_WINDOW``) from its next read; anything else is left as it is."""
        if self.streaming:
            self.boost = min(MAX_WINDOW, 2 * max(self.window, self.boost))

    def plan(self, offset: int, size: int, file_size: int, bdp: int = 0) -> list[tuple[int, int]]:
        """Record a read; return the byte ranges to fetch ahead. ``bdp``: the link's
        bandwidth-delay product in bytes (``remotefs.cache.link``; 0: unknown).

        The window is twice what the reader has read sequentially so far (once for BGZF; at
        least ``INITIAL_WINDOW``, at most ``MAX_WINDOW``): a 1 GiB stream reaches the full
        window after 24 MiB. A stream's window is also at least ``MARGIN * bdp`` and what
        it earned by waiting (``boost``). Ranges are topped up only in pieces of at least
        half the window (capped at ``REQUEST_SIZE``) so that a stream of small reads makes
        few, large requests.
        """
        end = min(offset + size, file_size)
        sequential = self.reached > 0 and abs(offset - self.reached) <= TOLERANCE
        if not sequential:
            self.reached, self.streak, self.window, self.asked = end, 0, 0, end
            self.boost = 0
            if self.seek_bytes > end - offset:
                self.asked = min(file_size, offset + self.seek_bytes)
                return [(offset, self.asked)]
            return []
        self.streak += end - offset
        self.reached = max(self.reached, end)
        # After a seek that fetched ``seek_bytes``, the window grows with what is actually
        # read on (a 1 kb region reads one or two blocks and stops: no MiB fetched for it).
        floor = INITIAL_WINDOW if self.streak >= self.seek_bytes else 0
        growth = 1 if self.seek_bytes else 2  # BGZF: the kernel reads ahead of the reader
        window = max(floor, growth * self.streak)
        if self.streaming:
            window = max(window, MARGIN * bdp, self.boost)
        self.window = min(MAX_WINDOW, window)
        start = max(self.asked, self.reached)
        stop = min(file_size, self.reached + self.window)
        if self.window >= CHUNK_SIZE:  # large windows end on chunk boundaries
            stop = min(file_size, -(-stop // CHUNK_SIZE) * CHUNK_SIZE)
        piece = min(REQUEST_SIZE, self.window // 2)
        if stop - start < piece and stop < file_size:
            return []  # top up in large pieces: fewer round trips
        if stop <= start:
            return []
        self.asked = stop
        return [(a, min(stop, a + REQUEST_SIZE)) for a in range(start, stop, REQUEST_SIZE)]
