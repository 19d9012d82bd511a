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
from typing import Protocol

import httpx

from remotefs.http.retry import RESET_MARGIN

DEFAULT_LIMIT = 1000
"""SB's documented budget per window (spec 1.9), until a response says otherwise."""


class SharedBudget(Protocol):
    """A budget shared by every mount of one token (``remotefs.shared``)."""

    @property
    def share(self) -> int:
        """What part of the budget this node may spend when the shared budget cannot answer."""
        ...

    async def take(self, limit: int) -> float | None:
        """0: send now; seconds: wait for the reset; ``None``: decide alone."""
        ...

    def observe(self, limit: int | None, remaining: int, reset: float) -> None: ...


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
    shared: SharedBudget | None = None
    """The cluster's budget, asked first (``--shared-state``); its ``share`` cuts this node's
    own spending when it cannot answer."""
    _alone_from: tuple[float | None, int] | None = field(default=None, repr=False)
    """(window, what remained of it) when this node last had to go on alone in a cluster."""

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
        if self.shared is not None:
            self.shared.observe(self.limit, remaining, reset)
        if self.reset is None or reset == self.reset:
            # Same window (or a renewed one we were estimating): the smaller count is the one
            # that accounts for both the server's view and our requests still in flight.
            self.remaining = remaining if self.remaining is None else min(self.remaining, remaining)
            self.reset = reset
        elif reset > self.reset:  # a newer window
            self.remaining, self.reset = remaining, reset
        # else: a late response from an older window; it says nothing about this one.

    def delay(self) -> float:
        """Seconds to wait before a request can be sent without a certain 429 (0: send now).

        Alone in a cluster of ``share`` members (the shared budget cannot answer), the node
        keeps to its share of what the window had left when it went alone (or when it first
        heard of a new window while alone): if every member does, together they spend no
        more than was left."""
        if self.remaining is None:
            return 0.0
        reserved = 0
        share = self.shared.share if self.shared is not None else 1
        if share > 1:
            if self._alone_from is None or self._alone_from[0] != self.reset:
                self._alone_from = (self.reset, self.remaining)
            reserved = self._alone_from[1] * (share - 1) // share
        else:
            self._alone_from = None
        if self.remaining > reserved or self.reset is None:
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
