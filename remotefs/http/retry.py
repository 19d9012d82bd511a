"""What is retried, how long to wait between attempts, and what a server asked for.

- **What**: only ``GET``/``HEAD`` (idempotent), on connect/read timeouts, network errors, a
  dropped connection (``RemoteProtocolError``, or a body shorter than its
  ``Content-Length``/``Content-Range``), any 5xx and 429.
- **Backoff**: exponential with full jitter (``uniform(0, min(cap, base * 2**n))``).
- **A server that says how long to wait is obeyed instead**: ``Retry-After`` (seconds or an
  HTTP date; ODM A24) and, on a 429, the SB ``X-RateLimit-Reset`` Unix second (spec 1.9).
- Nothing is retried past ``max_attempts``, and no wait is started that would end after the
  operation's deadline (:mod:`remotefs.http.send`).
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

import httpx

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD"})
"""Only these are retried: resending anything else could repeat a side effect."""

RETRYABLE_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,  # connect/read/write/pool timeouts
    httpx.NetworkError,  # connection refused/reset, read/write errors
    httpx.RemoteProtocolError,  # the peer closed the connection mid-response
    httpx.ProxyError,  # a flaky proxy is a network problem too
)

RESET_MARGIN = 0.25
"""Seconds added to an ``X-RateLimit-Reset`` wait: the reset is a whole Unix second of the
server's clock, and arriving a hair early costs a 429 and another full wait."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard :func:`~remotefs.http.send.send` tries."""

    base_delay: float = 0.2
    """First backoff ceiling in seconds; doubled per attempt (full jitter below it)."""
    max_delay: float = 5.0
    """Backoff ceiling: a retry is never postponed longer unless the server asks for it."""
    max_attempts: int = 10
    """Attempts per request, the first included."""
    operation_timeout: float = 30.0
    """The deadline of a request made outside any deadline (a safety net: every FUSE
    operation and background task sets its own, which the request inherits)."""

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff before attempt ``attempt + 1`` (``attempt`` >= 1)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)


DEFAULT_POLICY = RetryPolicy()


def server_wait(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait (``Retry-After``, or SB's reset on a 429)."""
    retry_after = response.headers.get("retry-after")
    if retry_after is not None:
        value = retry_after.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - time.time())
    reset = response.headers.get("x-ratelimit-reset")
    if response.status_code == 429 and reset is not None and reset.strip().isdigit():
        wait = int(reset) - time.time() + RESET_MARGIN
        if wait > 0:
            return wait
    return None
