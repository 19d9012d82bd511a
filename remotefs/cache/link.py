"""What the storage link can carry, measured from the fetches the block cache makes.

The block cache reports each ranged request that delivered its bytes (:meth:`Link.fetched`:
its size, when it was sent and when its whole body had arrived; queueing for room or for a
request slot before it was sent is not counted). From those:

- ``rtt``: the windowed minimum of the request times of the last ``RTT_SAMPLES`` fetches.
  A request time is the round trip plus the body's transfer, so this is an upper bound of
  the round trip that approaches it as small requests (a read's own few KiB, a file's tail)
  are seen; an overestimate only sizes the windows larger, within their bounds.
- ``throughput``: bytes delivered per second, all fetches together, over the span from the
  start of the oldest to the end of the newest of the fetches that ended within ``RATE_SPAN``
  of the newest. It changes only when a fetch lands: a new stream starts with what the
  link carried for the last one, and after a pause longer than ``RATE_SPAN`` the figure
  starts afresh from the next fetch (a shorter pause counts as time the link was idle).
- ``bdp``: the bandwidth-delay product, ``throughput * rtt``: the bytes a stream must have
  in flight to receive at the link's rate when each request costs a round trip.

Pure bookkeeping: no clock of its own (the caller passes its times), no I/O, O(samples) per
call. Used by :mod:`remotefs.cache.blockcache` (which feeds it) and, through it, by the
read-ahead planner (:mod:`remotefs.cache.prefetch`) for the streams that are already
sequential.
"""

from __future__ import annotations

import math
from collections import deque

RTT_SAMPLES = 32
"""Fetches over which the round trip is the minimum: long enough to include a small request
of a stream (its first, demand-sized ones), short enough to follow a link that changes."""
RATE_SPAN = 1.0
"""Seconds of fetches over which the throughput is measured: ~25 round trips at 40 ms."""


MIN_SPAN = 1e-3
"""Seconds: the shortest span a rate is measured over (a fetch timed as instant)."""


class Link:
    """Estimates of the link from the fetches seen so far (0 before the first). They are
    computed when a fetch lands, so reading them (every read of a stream does) costs
    nothing."""

    def __init__(self, rtt_samples: int = RTT_SAMPLES, rate_span: float = RATE_SPAN) -> None:
        self._times: deque[float] = deque(maxlen=rtt_samples)
        self._rate_span = rate_span
        self._landed: deque[tuple[float, float, int]] = deque()  # (sent, ended, bytes)
        self._landed_bytes = 0
        self._newest = -math.inf
        self.rtt = 0.0
        """Seconds: the quickest of the recent requests, from sending to its last byte."""
        self.throughput = 0.0
        """Bytes per second delivered while fetching."""
        self.bdp = 0
        """Bytes: ``throughput * rtt``."""

    def fetched(self, nbytes: int, sent: float, ended: float) -> None:
        """A request for ``nbytes`` sent at ``sent`` whose whole body had arrived at ``ended``
        (seconds on one monotonic clock)."""
        self._times.append(max(0.0, ended - sent))
        self._landed.append((sent, ended, nbytes))
        self._landed_bytes += nbytes
        self._newest = max(self._newest, ended)  # never pruned below: the max of _landed
        while len(self._landed) > 1 and self._landed[0][1] < self._newest - self._rate_span:
            self._landed_bytes -= self._landed.popleft()[2]
        start = min(sent for sent, _, _ in self._landed)
        self.rtt = min(self._times)
        self.throughput = self._landed_bytes / max(self._newest - start, MIN_SPAN)
        self.bdp = int(self.throughput * self.rtt)
