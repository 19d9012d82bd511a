"""Knobs and counters: what tests and benchmarks turn and read.

:class:`Knobs` holds the fault and policy settings (latency, failing every Nth request,
dropping bodies midway, rate-limit budgets, signed-URL lifetime, the origin that signed
storage URLs name). They are set from the command line and can be changed at run time with
``POST /_emulator/config`` (a JSON object of knob names), so one emulator process can serve a
whole test module.

:class:`Stats` counts requests and body bytes by route name (``sb.files.list``,
``sb.storage``, ``odm.download`` …) and by status, once answered, and every request as it
arrives (``arrived``, before the injected latency: what a test waits on to know a request is
under way); ``GET /_emulator/stats`` returns them and ``POST /_emulator/reset`` zeroes them.
Tests assert exact request counts from these.

:class:`RateLimiter` is a fixed-window budget per key (the SB token, spec 1.9: 1000 requests
per 300 s; ODM optionally, A24). The window opens at a key's first request and ``reset`` is the
integer Unix second it closes.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Knobs:
    latency_ms: float = 0.0
    """Added before every API and storage response."""
    fail_every: int = 0
    """Every Nth API/storage request answers 503 (0: never)."""
    drop_every: int = 0
    """Every Nth byte-serving request (storage, ODM download) drops its body halfway."""
    stall_every: int = 0
    """Every Nth byte-serving request (not dropped) pauses halfway through its body for
    ``stall_ms``, then sends the rest: a server that stalls mid-body."""
    stall_ms: float = 0.0
    sb_rate_limit: int = 1000
    sb_rate_window: float = 300.0
    odm_rate_limit: int = 0
    """ODM requests per window before 429 with Retry-After (0: unlimited, A24)."""
    odm_rate_window: float = 60.0
    url_lifetime: float = 3600.0
    """Seconds a signed storage URL stays valid (A5)."""
    revoked: tuple[str, ...] = ()
    """SB file IDs whose storage answers 403 AccessDenied (access revoked, not expiry)."""
    storage_url: str = ""
    """The origin signed storage URLs name (``http[s]://HOST:PORT``, as S3 is another host
    than the API); empty: the origin the request came to. The storage route answers on every
    origin the emulator listens on, so a proxy at this origin must forward to the emulator."""

    def update(self, values: dict[str, Any]) -> None:
        known = {f.name: f for f in fields(self)}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown knob {name!r}")
            current = getattr(self, name)
            if isinstance(current, tuple):
                value = tuple(str(v) for v in value)
            elif isinstance(current, str):
                if not isinstance(value, str):
                    raise ValueError(f"knob {name!r} takes a string")
                value = _origin(value) if name == "storage_url" else value
            elif isinstance(current, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"knob {name!r} takes a number")
            setattr(self, name, type(current)(value))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _origin(url: str) -> str:
    """``url`` as an origin, ``scheme://host[:port]`` with no trailing slash ("" stays "")."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) origin: {url!r}")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"an origin has no path or query: {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


class Stats:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.arrived = 0
        self.started = time.time()

    def record(self, route: str, status: int, nbytes: int) -> None:
        self.requests[route] += 1
        self.statuses[f"{route} {status}"] += 1
        self.bytes[route] += nbytes

    def arrive(self) -> None:
        self.arrived += 1

    def reset(self) -> None:
        self.arrived = 0
        self.requests.clear()
        self.statuses.clear()
        self.bytes.clear()

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "statuses": dict(self.statuses),
            "bytes": dict(self.bytes),
            "total_requests": sum(self.requests.values()),
            "arrived": self.arrived,
        }


@dataclass
class Window:
    limit: int
    remaining: int
    reset: int  # Unix seconds, integer (the SB client parses it with int())


class RateLimiter:
    def __init__(self) -> None:
        self._windows: dict[str, Window] = {}

    def peek(self, key: str, limit: int, window: float) -> Window:
        now = time.time()
        current = self._windows.get(key)
        if current is None or now >= current.reset or current.limit != limit:
            current = Window(limit, limit, math.ceil(now + window))
            self._windows[key] = current
        return current

    def take(self, key: str, limit: int, window: float) -> tuple[bool, Window]:
        """Spend one request of ``key``'s budget; False when it is exhausted."""
        current = self.peek(key, limit, window)
        if current.remaining <= 0:
            return False, current
        current.remaining -= 1
        return True, current

    def reset(self) -> None:
        self._windows.clear()
