"""HTTP for every backend: one client, one retry loop, one place that checks byte ranges.

Design:

- :func:`make_client` builds the one ``httpx.AsyncClient`` of a mount. It carries **no auth
  header**: backends pass credentials per request, because a Seven Bridges signed storage URL
  must never receive the platform token (spec 1.8). It never follows redirects by default:
  httpx strips ``Authorization`` on a cross-origin redirect but not ``X-SBG-Auth-Token`` or
  ``Genestack-API-Token``, so a redirect on an API call could hand the token to another host.
- :func:`send` performs one logical request under an absolute ``deadline`` (a
  ``trio.current_time()`` value the caller computes once per FUSE operation, see
  :meth:`RetryPolicy.deadline`). It always reads the whole body before returning, so a body cut
  short by a dropped connection is a retryable failure like any other transport error.
- **What is retried**: only ``GET``/``HEAD`` (idempotent), on connect/read timeouts, network
  errors, a dropped connection (``RemoteProtocolError``, or a body shorter than its
  ``Content-Length``/``Content-Range``), any 5xx and 429. Backoff is exponential with full
  jitter (``uniform(0, min(cap, base * 2**n))``); a server that says how long to wait is obeyed
  instead: ``Retry-After`` (seconds or an HTTP date; ODM A24) and, on a 429, the SB
  ``X-RateLimit-Reset`` Unix second (spec 1.9). Nothing is retried past ``max_attempts``.
- **The deadline is never passed**: each attempt runs in a cancel scope ending at the
  deadline, and a wait that would end after it is not started: :class:`~remotefs.errors.Transient`
  is raised at once, naming the method, the redacted URL and the last cause.
- **Final statuses**: 404 → ``NotFound``; 401/403 → ``AccessDenied``; other 4xx (and
  unexpected 1xx/2xx/3xx) → ``ProtocolError``; 5xx/429/transport failures that outlived the
  retries → ``Transient``. A caller that wants to inspect a status itself lists it in
  ``expected`` (the SB backend does that for the storage 403, to tell an expired URL from a
  revoked one).
- :class:`RateLimitState` (SB, spec 1.9) keeps the latest ``X-RateLimit-Remaining``/``Reset``
  seen on any response and counts requests sent since, so when the budget is spent and the
  window has not reset, :func:`send` waits for the reset (within the deadline) instead of
  sending a request that must fail with 429.
- Logging: one DEBUG line per retry (attempt, cause, wait). URLs go through
  :func:`~remotefs.errors.redact_url`; headers are never logged, and no error message contains
  a header, so neither tokens nor signatures can leak through logs or tracebacks.

Helpers shared by the backends also live here: :func:`range_body` (the 206 /
``Content-Range`` / exact-length rules of A6 and A23), :class:`SingleFlight` (concurrent
callers of one key share one fetch), :func:`gather_limited` (bounded concurrency that raises
the first error, never an exception group) and timestamp parsers for the wire formats.
"""

from __future__ import annotations

import calendar
import email.utils
import json
import logging
import random
import re
import time
import urllib.request
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import httpcore
import httpx
import trio

from remotefs import __version__
from remotefs.errors import (
    AccessDenied,
    NotFound,
    ProtocolError,
    RemoteError,
    Stale,
    Transient,
    redact_url,
)
from remotefs.transport import ThreadedTransport

log = logging.getLogger(__name__)

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

CLOSE_TIMEOUT = 2.0
"""Seconds a response may take to close after a cancellation (closing only drops the
connection, so this is generous)."""

MAX_DETAIL = 200
"""Characters of a server's error message kept in our own error messages."""


# ---------------------------------------------------------------------------------------
# The client


# Behind a proxy the mount falls back to httpx's own transport (see make_client). httpcore
# reads response bodies 64 KiB per socket read; for the multi-MiB ranged bodies of
# read-ahead that is ~16 Python-level round trips per MiB on the mount's one busy thread.
# 1 MiB per read measured +30-40% for a 1 GiB stream (scripts/bench). A class attribute of
# httpcore's HTTP/1.1 connection: set only when it exists, so a newer httpcore degrades to
# its default instead of failing.
HTTP_READ_BYTES = 1 << 20
_http11 = getattr(httpcore, "_async", None)
_conn = getattr(getattr(_http11, "http11", None), "AsyncHTTP11Connection", None)
if _conn is not None and isinstance(getattr(_conn, "READ_NUM_BYTES", None), int):
    _conn.READ_NUM_BYTES = max(_conn.READ_NUM_BYTES, HTTP_READ_BYTES)


def make_client(
    *,
    timeout: float = 15.0,
    max_connections: int = 32,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The mount's one HTTP client: timeouts and pool limits, no credentials, no redirects.

    ``timeout`` bounds each connect and each socket read; the whole operation is bounded
    separately by :func:`send`'s deadline. Exchanges run in
    :class:`~remotefs.transport.ThreadedTransport` (bodies received off the trio thread)
    unless the environment names a proxy (``HTTPS_PROXY``, ``ALL_PROXY``, ...): httpx then
    keeps its own transport, which honours proxies and ``NO_PROXY`` (with a custom transport
    httpx would ignore them). ``transport`` is for tests (``httpx.MockTransport``,
    ``httpx.ASGITransport``).
    """
    if transport is None:
        if {"http", "https", "all"} & urllib.request.getproxies().keys():
            log.info("a proxy is configured: responses are received by httpx's own transport")
        else:
            transport = ThreadedTransport(max_connections=max_connections)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        headers={"User-Agent": f"remotefs/{__version__}"},
        follow_redirects=False,
        transport=transport,
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How hard :func:`send` tries, and how long one FUSE operation may take."""

    base_delay: float = 0.2
    """First backoff ceiling in seconds; doubled per attempt (full jitter below it)."""
    max_delay: float = 5.0
    """Backoff ceiling: a retry is never postponed longer unless the server asks for it."""
    max_attempts: int = 10
    """Attempts per request, the first included."""
    operation_timeout: float = 30.0
    """Seconds a FUSE operation may spend on the network before it answers EIO."""

    def deadline(self) -> float:
        """An absolute ``trio.current_time()`` deadline for an operation starting now."""
        return trio.current_time() + self.operation_timeout

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff before attempt ``attempt + 1`` (``attempt`` >= 1)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)


DEFAULT_POLICY = RetryPolicy()


# ---------------------------------------------------------------------------------------
# Rate-limit bookkeeping (SB, spec 1.9)


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


# ---------------------------------------------------------------------------------------
# send()


class _Retryable(Exception):
    """One attempt failed in a way worth retrying; ``cause`` is safe to log."""

    def __init__(self, cause: str, wait: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.wait = wait  # what the server asked for, if it did


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str | int] | None = None,
    deadline: float,
    policy: RetryPolicy = DEFAULT_POLICY,
    expected: tuple[int, ...] = (200,),
    rate_limit: RateLimitState | None = None,
    raw: bool = False,
    follow_redirects: bool = False,
) -> httpx.Response:
    """Send one request, retrying as the module docstring says; return a fully read response.

    ``raw=True`` is for byte ranges: ``response.content`` is then the body exactly as sent on
    the wire, never decoded by ``Content-Encoding`` (which is removed from the returned
    headers), so the bytes match the platform's size and ``Content-Range``.

    Raises:
        NotFound, AccessDenied, ProtocolError: a final status not in ``expected``.
        Transient: retries exhausted, the deadline reached, or a non-idempotent request failed.
    """
    method = method.upper()
    request = client.build_request(method, url, headers=headers, params=params)
    shown = f"{method} {redact_url(str(request.url))}"
    retryable = method in IDEMPOTENT_METHODS
    attempt = 0
    last_cause = ""
    while True:
        attempt += 1
        if rate_limit is not None:
            await _wait_for_budget(rate_limit, deadline, shown)
        try:
            with trio.move_on_at(deadline) as scope:
                response = await _exchange(client, request, raw, follow_redirects)
            if scope.cancelled_caught:
                raise Transient(
                    f"{shown}: no complete answer before the operation's deadline "
                    f"(attempt {attempt}{'; before: ' + last_cause if last_cause else ''})"
                )
            if rate_limit is not None:
                rate_limit.observe(response.headers)
            status = response.status_code
            if status in expected:
                return response
            if status != 429 and status < 500:
                raise _status_error(shown, response)
            raise _Retryable(_describe_status(response), _server_wait(response))
        except _Retryable as failure:
            cause = last_cause = failure.cause
            if not retryable:
                raise Transient(f"{shown}: {cause} (a {method} is never retried)") from None
            if attempt >= policy.max_attempts:
                raise Transient(
                    f"{shown}: gave up after {attempt} attempts; last: {cause}"
                ) from None
            wait = policy.backoff(attempt)
            if failure.wait is not None:
                # The server said when: obey it, plus a little jitter so that the clients it
                # told the same thing do not all come back in the same instant.
                wait = failure.wait + random.uniform(0, policy.base_delay)
            if trio.current_time() + wait > deadline:
                raise Transient(
                    f"{shown}: gave up after {attempt} attempts: the next one (in {wait:.1f} s) "
                    f"would pass the operation's deadline; last: {cause}"
                ) from None
            log.debug("%s: attempt %d failed (%s); retrying in %.2f s", shown, attempt, cause, wait)
            await trio.sleep(wait)


async def _wait_for_budget(state: RateLimitState, deadline: float, shown: str) -> None:
    while (wait := state.delay()) > 0:
        if trio.current_time() + wait > deadline:
            raise Transient(
                f"{shown}: the request budget is spent until the rate-limit window resets in "
                f"{wait:.0f} s, past the operation's deadline"
            )
        log.debug("%s: rate-limit budget spent; waiting %.2f s for the reset", shown, wait)
        await trio.sleep(wait)
    state.spend()


async def _exchange(
    client: httpx.AsyncClient, request: httpx.Request, raw: bool, follow_redirects: bool
) -> httpx.Response:
    """One attempt: send, read the whole body, check its length. Raises ``_Retryable``."""
    try:
        response = await client.send(request, stream=True, follow_redirects=follow_redirects)
    except RETRYABLE_TRANSPORT_ERRORS as exc:
        raise _Retryable(_describe_exception(exc)) from None
    except httpx.HTTPError as exc:  # bad URL scheme, too many redirects, local protocol error
        raise ProtocolError(
            f"{request.method} {redact_url(str(request.url))}: {_describe_exception(exc)}"
        ) from None
    pre_read = response.is_stream_consumed
    try:
        if pre_read:
            # A transport that hands over an already read body (httpx.MockTransport with
            # content=...): only the decoded bytes exist.
            body = response.content
        else:
            body = b"".join([chunk async for chunk in response.aiter_raw()])
    except RETRYABLE_TRANSPORT_ERRORS as exc:
        raise _Retryable(f"body cut short: {_describe_exception(exc)}") from None
    finally:
        with trio.CancelScope(deadline=trio.current_time() + CLOSE_TIMEOUT, shield=True):
            await response.aclose()
    declared = _declared_length(response)
    if declared is not None and len(body) < declared:
        raise _Retryable(
            f"HTTP {response.status_code} body cut short at {len(body)} of {declared} bytes"
        )
    headers = response.headers
    if raw or pre_read:  # the body is not (or no longer) encoded
        headers = httpx.Headers(
            [(k, v) for k, v in headers.multi_items() if k.lower() != "content-encoding"]
        )
    try:
        # Response(content=...) decodes a remaining Content-Encoding once, as httpx would have.
        return httpx.Response(response.status_code, headers=headers, content=body, request=request)
    except httpx.DecodingError as exc:
        raise ProtocolError(
            f"{request.method} {redact_url(str(request.url))}: undecodable body ({exc})"
        ) from None


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def _declared_length(response: httpx.Response) -> int | None:
    """The body length the headers promise, if any (a HEAD promises none)."""
    if response.request.method == "HEAD" or response.status_code in (204, 304):
        return None
    length = response.headers.get("content-length")
    if length is not None and length.strip().isdigit():
        return int(length)
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        if match:
            return int(match[2]) - int(match[1]) + 1
    return None


def _server_wait(response: httpx.Response) -> float | None:
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


def _status_error(shown: str, response: httpx.Response) -> RemoteError:
    text = f"{shown}: {_describe_status(response)}"
    status = response.status_code
    if status == 404:
        return NotFound(text)
    if status in (401, 403):
        return AccessDenied(text)
    return ProtocolError(text)


def _describe_status(response: httpx.Response) -> str:
    detail = server_message(response)
    return f"HTTP {response.status_code}" + (f" ({detail})" if detail else "")


def _describe_exception(exc: BaseException) -> str:
    text = redact_url(str(exc))[:MAX_DETAIL]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_XML_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")


def server_message(response: httpx.Response) -> str:
    """The platform's own error text, if its body has one: SB ``message``, ODM
    ``error.message`` (A25) or the S3 XML ``<Message>``; shortened and redacted."""
    try:
        text = response.text
    except (httpx.ResponseNotRead, UnicodeDecodeError):
        return ""
    message: Any = None
    try:
        body = json.loads(text)
    except ValueError:
        match = _XML_MESSAGE.search(text)
        message = match[1] if match else None
    else:
        if isinstance(body, dict):
            message = body.get("message")
            error = body.get("error")
            if message is None and isinstance(error, dict):
                message = error.get("message")
    if not isinstance(message, str):
        return ""
    return redact_url(message.strip())[:MAX_DETAIL]


# ---------------------------------------------------------------------------------------
# Byte ranges (SB storage A6, ODM download A23)


def range_header(offset: int, length: int) -> str:
    """``Range`` for ``length`` bytes from ``offset``: RFC 7233, inclusive end."""
    return f"bytes={offset}-{offset + length - 1}"


def range_body(response: httpx.Response, offset: int, length: int, size: int, what: str) -> bytes:
    """The bytes of a ranged GET, or an error: never fewer or other bytes than asked.

    Rules: a 206 must carry ``Content-Range: bytes offset-(offset+length-1)/size`` and exactly
    ``length`` bytes. A 200 means the server ignored ``Range``; it is accepted only when the
    whole file was asked for and it has exactly ``size`` bytes. A ``Content-Range`` total
    other than the listed size means the file changed since it was listed: ``Stale``.
    """
    status = response.status_code
    body = response.content
    if status == 206:
        header = response.headers.get("content-range", "")
        match = _CONTENT_RANGE.match(header)
        if not match:
            raise ProtocolError(f"{what}: 206 with a missing or malformed Content-Range {header!r}")
        start, end, total = int(match[1]), int(match[2]), match[3]
        if total != "*" and int(total) != size:
            raise Stale(f"{what}: the file is now {total} bytes, not the {size} listed")
        if (start, end) != (offset, offset + length - 1):
            raise ProtocolError(
                f"{what}: asked for bytes {offset}-{offset + length - 1}, got {start}-{end}"
            )
        if len(body) != length:
            raise ProtocolError(f"{what}: 206 body has {len(body)} bytes, expected {length}")
        return body
    if status == 200:
        if offset != 0 or length != size:
            raise ProtocolError(
                f"{what}: the server ignored Range (200 for bytes {offset}-{offset + length - 1})"
            )
        if len(body) != size:
            raise ProtocolError(f"{what}: 200 body has {len(body)} bytes, expected {size}")
        return body
    raise ProtocolError(f"{what}: unexpected HTTP {status} for a byte range")


# ---------------------------------------------------------------------------------------
# Concurrency helpers

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")


@dataclass(eq=False)
class _Flight(Generic[V]):
    done: trio.Event = field(default_factory=trio.Event)
    result: V | None = None
    error: Exception | None = None
    finished: bool = False


class SingleFlight(Generic[K, V]):
    """Concurrent calls for one key share one fetch; nothing is cached after it ends.

    The first caller runs ``fetch``; callers arriving while it runs wait for its outcome and
    get the same result, or an error of the same kind. If the first caller is cancelled (its
    FUSE request was interrupted), a waiter takes over and runs ``fetch`` itself: one
    caller's cancellation never fails the others.
    """

    def __init__(self) -> None:
        self._flights: dict[K, _Flight[V]] = {}

    async def run(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        while True:
            flight = self._flights.get(key)
            if flight is None:
                flight = _Flight()
                self._flights[key] = flight
                try:
                    flight.result = await fetch()
                except Exception as exc:
                    flight.error = exc
                    flight.finished = True
                    raise
                else:
                    flight.finished = True
                    return flight.result
                finally:
                    del self._flights[key]
                    flight.done.set()
            await flight.done.wait()
            if not flight.finished:
                continue  # the leader was cancelled: lead ourselves
            if flight.error is not None:
                if isinstance(flight.error, RemoteError):
                    # A fresh instance: one exception object raised in many tasks would
                    # collect all their tracebacks.
                    raise type(flight.error)(*flight.error.args) from flight.error
                raise flight.error
            return flight.result  # type: ignore[return-value]


async def gather_limited(thunks: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run ``thunks`` with at most ``limit`` at once; results in order.

    The first exception cancels the rest and is raised as itself (not as an exception group),
    so callers see the ``RemoteError`` they expect.
    """
    results: list[Any] = [None] * len(thunks)
    failure: Exception | None = None
    limiter = trio.CapacityLimiter(limit)

    async def run(index: int, thunk: Callable[[], Awaitable[T]]) -> None:
        nonlocal failure
        async with limiter:
            try:
                results[index] = await thunk()
            except Exception as exc:
                if failure is None:
                    failure = exc
                nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for index, thunk in enumerate(thunks):
            nursery.start_soon(run, index, thunk)
    if failure is not None:
        raise failure
    return results


# ---------------------------------------------------------------------------------------
# Timestamps on the wire


def parse_iso8601_ns(value: object) -> int | None:
    """``2019-08-07T13:28:01Z`` (SB 1.3, ODM A19; fractions and offsets allowed) → Unix ns.

    A naive time is taken as UTC. Anything else (missing, malformed): ``None``.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    seconds = calendar.timegm(stamp.utctimetuple())
    return seconds * 1_000_000_000 + stamp.microsecond * 1_000


def parse_http_date_ns(value: str | None) -> int | None:
    """An HTTP date (``Last-Modified``) → Unix ns, or ``None``."""
    if not value:
        return None
    try:
        stamp = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return calendar.timegm(stamp.utctimetuple()) * 1_000_000_000
