"""What the mount has done: requests by kind, bytes fetched and served, cache hits, errors.

One :data:`METRICS` per process (a mount runs in a process of its own). It is fed where the
facts are: :func:`remotefs.http.send.send` records every logical request (its kind, its
attempts, whether it failed in the end, its body bytes), the block cache every read (a hit
needs no fetch), the FUSE handlers every failure they answer (``fuse_handler`` in
``remotefs.fs.operations``). ``remotefs status`` and the Prometheus endpoint read it
(``remotefs.control``, ``remotefs.prometheus``); nothing here does I/O, and recording is a
few integer additions.

Request kinds: ``listing`` (folder and study listings, projects), ``signed-url`` (SB
``download_info``), ``storage`` (SB signed-URL byte ranges), ``download`` (ODM byte ranges),
``head`` (ODM sizes), ``check`` (credentials and target), ``other``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

KINDS = ("listing", "signed-url", "storage", "download", "head", "check", "other")


@dataclass
class RequestCounts:
    requests: int = 0
    """Logical requests (a retried request counts once)."""
    attempts: int = 0
    """Requests sent on the wire, retries included."""
    errors: int = 0
    """Requests that failed in the end (after their retries)."""
    bytes: int = 0
    """Response body bytes received."""


@dataclass
class Metrics:
    started: float = field(default_factory=time.time)
    requests: defaultdict[str, RequestCounts] = field(
        default_factory=lambda: defaultdict(RequestCounts)
    )
    reads: int = 0
    """FUSE reads answered (with bytes)."""
    read_hits: int = 0
    """Of those, answered from the cache alone (memory or disk), with no fetch."""
    bytes_served: int = 0
    errors_answered: int = 0
    """FUSE operations answered with an error because of the platform (EIO, EACCES, …), a
    deadline or a bug; not names that do not exist, nor what the mount refuses by design."""
    last_error: str = ""
    last_error_at: float = 0.0

    def request(self, kind: str, attempts: int, failed: bool, nbytes: int) -> None:
        counts = self.requests[kind if kind in KINDS else "other"]
        counts.requests += 1
        counts.attempts += attempts
        counts.errors += failed
        counts.bytes += nbytes

    def read(self, nbytes: int, hit: bool) -> None:
        self.reads += 1
        self.read_hits += hit
        self.bytes_served += nbytes

    def error(self, text: str) -> None:
        self.errors_answered += 1
        self.last_error, self.last_error_at = text, time.time()

    @property
    def bytes_fetched(self) -> int:
        return sum(self.requests[k].bytes for k in ("storage", "download"))


METRICS = Metrics()
