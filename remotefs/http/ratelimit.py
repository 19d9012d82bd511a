"""Seven Bridges' request budget (spec 1.9): 1,000 requests per 5 minutes per token.

:class:`RateLimitState` keeps the latest ``X-RateLimit-Remaining``/``Reset`` seen on any
response of one token and counts requests sent since, so when the budget is spent and the
window has not reset, :func:`~remotefs.http.send.send` waits for the reset (within the
deadline) instead of sending a request that must fail with 429.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from remotefs.http.retry import RESET_MARGIN


@dataclass
class RateLimitState:
    """The last known SB request budget of one token, shared by all its requests.

    ``remaining`` is the server's last ``X-RateLimit-Remaining`` minus the requests sent since
    (so concurrent tasks see each other's spending before the responses arrive); ``reset`` is
    the Unix second the window ends, ``None`` when unknown. When the window has passed, the
    budget is assumed renewed to ``limit`` until a response says otherwise.
    """

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def observe(self, headers: httpx.Headers) -> None:
        """Learn from one response's ``X-RateLimit-*`` headers (absent or malformed: ignored)."""
        try:
            remaining = int(headers["x-ratelimit-remaining"])
            reset = float(int(headers["x-ratelimit-reset"]))
        except (KeyError, ValueError):
            return
        limit = headers.get("x-ratelimit-limit")
        if limit is not None and limit.isdigit():
            self.limit = int(limit)
        if self.reset is None or reset == self.reset:
            # Same window (or a renewed one we were estimating): the smaller count is the one
            # that accounts for both the server's view and our requests still in flight.
            self.remaining = remaining if self.remaining is None else min(self.remaining, remaining)
            self.reset = reset
        elif reset > self.reset:  # a newer window
            self.remaining, self.reset = remaining, reset
        # else: a late response from an older window; it says nothing about this one.

    def delay(self) -> float:
        """Seconds to wait before a request can be sent without a certain 429 (0: send now)."""
        if self.remaining is None or self.remaining > 0 or self.reset is None:
            return 0.0
        now = self.clock()
        if now >= self.reset + RESET_MARGIN:
            # The window is over: assume a fresh budget until a response tells the real one.
            self.remaining, self.reset = self.limit, None
            return 0.0
        return self.reset + RESET_MARGIN - now

    def spend(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1
