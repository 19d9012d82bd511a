"""One logical request: sent, retried, read whole, and its final status turned into an error.

- :func:`send` performs one request under the **operation's deadline**: the deadline of the
  enclosing cancel scopes (a FUSE handler sets one per operation; a background task sets its
  own), or an explicit ``deadline``. A request made outside any deadline gets
  ``policy.operation_timeout`` from now: nothing waits forever.
- It always reads the whole body before returning, so a body cut short by a dropped
  connection is a retryable failure like any other transport error.
- Retries follow :mod:`remotefs.http.retry`. **The deadline is never passed**: each attempt
  runs in a cancel scope ending at the deadline, and a wait that would end after it is not
  started: :class:`~remotefs.errors.DeadlineExceeded` is raised at once, naming the method,
  the redacted URL and the last cause. Retries that run out are
  :class:`~remotefs.errors.Transient`: the platform's answer, which a shared outcome may hand
  to other callers; a deadline is the caller's own and is never shared
  (:mod:`remotefs.concurrency`).
- **Final statuses**: 404 → ``NotFound``; 401/403 → ``AccessDenied``; other 4xx (and
  unexpected 1xx/2xx/3xx) → ``ProtocolError``; 5xx/429/transport failures that outlived the
  retries → ``Transient``. A caller that wants to inspect a status itself lists it in
  ``expected`` (the SB backend does that for the storage 403, to tell an expired URL from a
  revoked one).
- With a :class:`~remotefs.http.ratelimit.RateLimitState` (SB), a request waits for the
  budget's reset (within the deadline) rather than being sent to fail with 429.
- Metrics: every logical request is counted once (with its attempts and body bytes); it is
  an error when it raised, not when its caller cancelled it (a reader that went away, a
  read-ahead given up).
- Logging: one DEBUG line per exchange (method, path without its query string, status, body
  bytes, ms: ``--debug``) and one per retry (attempt, cause, wait). URLs go through
  :func:`~remotefs.errors.redact_url`; headers are never logged, and no error message contains
  a header, so neither tokens nor signatures can leak through logs or tracebacks.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

import httpx
import trio

from remotefs.concurrency import inner_deadline
from remotefs.errors import (
    AccessDenied,
    DeadlineExceeded,
    NotFound,
    ProtocolError,
    RemoteError,
    Transient,
    redact_url,
)
from remotefs.http.client import threaded_transport
from remotefs.http.ranges import promised_length
from remotefs.http.ratelimit import DEFAULT_LIMIT, RateLimitState
from remotefs.http.retry import (
    DEFAULT_POLICY,
    IDEMPOTENT_METHODS,
    RETRYABLE_TRANSPORT_ERRORS,
    RetryPolicy,
    server_wait,
)
from remotefs.http.wire import MAX_DETAIL, server_message
from remotefs.metrics import METRICS
from remotefs.transport import ThreadedTransport

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 2.0
"""Seconds a response may take to close after a cancellation (closing only drops the
connection, so this is generous)."""

_CONNECT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)
Params = Mapping[str, str | int] | list[tuple[str, str | int]]
"""Query parameters: a mapping, or pairs (a key given twice: SB's OR of one filter)."""
_connect_budget: ContextVar[float | None] = ContextVar("connect_budget", default=None)


@contextmanager
def give_up_connecting_after(seconds: float) -> Iterator[None]:
    """Within this block (and the tasks it starts), a request that has never reached its
    host stops after ``seconds``, retries and waits included: ``Transient``. For the mount's
    first requests, where a platform that cannot be reached at all must be said at once;
    a request that got any answer, and every request of a mount that is up, retries until
    its deadline."""
    token = _connect_budget.set(seconds)
    try:
        yield
    finally:
        _connect_budget.reset(token)


def operation_deadline(policy: RetryPolicy = DEFAULT_POLICY) -> float:
    """A moment before the enclosing deadline (``concurrency.inner_deadline``: the request
    then says which URL ran out of time), or ``operation_timeout`` from now when no scope
    sets one."""
    deadline = inner_deadline()
    if math.isinf(deadline):
        return trio.current_time() + policy.operation_timeout
    return deadline


class _Retryable(Exception):
    """One attempt failed in a way worth retrying; ``cause`` is safe to log."""

    def __init__(self, cause: str, wait: float | None = None, *, connect: bool = False) -> None:
        super().__init__(cause)
        self.cause = cause
        self.wait = wait  # what the server asked for, if it did
        self.connect = connect  # no connection could be made


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    params: Params | None = None,
    deadline: float | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    expected: tuple[int, ...] = (200,),
    rate_limit: RateLimitState | None = None,
    raw: bool = False,
    follow_redirects: bool = False,
    kind: str = "other",
) -> httpx.Response:
    """Send one request, retrying as the module docstring says; return a fully read response.

    ``kind`` names it in the mount's metrics (``remotefs.metrics.KINDS``).

    ``raw=True`` is for byte ranges: ``response.content`` is then the body exactly as sent on
    the wire, never decoded by ``Content-Encoding`` (which is removed from the returned
    headers), so the bytes match the platform's size and ``Content-Range``.

    Raises:
        NotFound, AccessDenied, ProtocolError: a final status not in ``expected``.
        DeadlineExceeded: the deadline came (or the next attempt would start after it).
        Transient: retries exhausted, or a non-idempotent request failed.
    """
    if deadline is None:
        deadline = operation_deadline(policy)
    method = method.upper()
    query = None if params is None else httpx.QueryParams(cast(Any, params))  # pairs or a map
    request = _build(client, method, url, headers, query)
    shown = _Shown(request)
    retryable = method in IDEMPOTENT_METHODS
    started = trio.current_time()
    connect_budget = _connect_budget.get()
    answered = False  # any HTTP answer at all, so the host is reachable
    attempt = 0
    last_cause = ""
    received: httpx.Response | None = None
    failed = False
    try:
        while True:
            attempt += 1
            if rate_limit is not None:
                await _wait_for_budget(rate_limit, deadline, shown)
            try:
                sent_at = trio.current_time()
                attempt_deadline = deadline
                if connect_budget is not None and not answered:  # a host that drops packets too
                    attempt_deadline = min(deadline, started + connect_budget)
                try:
                    with trio.move_on_at(attempt_deadline) as scope:
                        response = await _exchange(client, request, raw, follow_redirects)
                except _Retryable as failure:
                    _log_exchange(request, sent_at, failure.cause)
                    raise
                _log_exchange(request, sent_at, None if scope.cancelled_caught else response)
                if scope.cancelled_caught and attempt_deadline < deadline:
                    raise Transient(
                        f"{shown}: no answer within {connect_budget:.0f} s (cannot connect?)"
                    )
                if scope.cancelled_caught:
                    raise DeadlineExceeded(
                        f"{shown}: no complete answer before the operation's deadline "
                        f"(attempt {attempt}{'; before: ' + last_cause if last_cause else ''})"
                    )
                answered = True
                if rate_limit is not None:
                    rate_limit.observe(response.headers)
                status = response.status_code
                if status in expected:
                    received = response
                    return response
                if status != 429 and status < 500:
                    raise _status_error(shown, response)
                raise _Retryable(_describe_status(response), server_wait(response))
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
                now = trio.current_time()
                if (
                    connect_budget is not None
                    and failure.connect
                    and not answered
                    and now + wait > started + connect_budget
                ):
                    raise Transient(f"{shown}: cannot connect ({cause})") from None
                if now + wait > deadline:
                    raise DeadlineExceeded(
                        f"{shown}: gave up after {attempt} attempts: the next one "
                        f"(in {wait:.1f} s) would pass the operation's deadline; last: {cause}"
                    ) from None
                log.debug(
                    "%s: attempt %d failed (%s); retrying in %.2f s", shown, attempt, cause, wait
                )
                await trio.sleep(wait)
    except Exception:
        failed = True  # not a cancellation: a request its caller gave up on did not fail
        raise
    finally:
        METRICS.request(kind, attempt, failed, len(received.content) if received else 0)


def _log_exchange(
    request: httpx.Request, sent_at: float, outcome: httpx.Response | str | None
) -> None:
    """One DEBUG line per exchange (``--debug``): method, path without its query string (so
    never a signature), status or failure, body bytes, milliseconds. Never a header."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    ms = (trio.current_time() - sent_at) * 1000
    port = f":{request.url.port}" if request.url.port else ""
    where = f"{request.url.scheme}://{request.url.host}{port}"  # never a userinfo part
    shown = f"{request.method} {where}{request.url.path}"
    if isinstance(outcome, httpx.Response):
        log.debug(
            "%s → %d, %d bytes, %.0f ms", shown, outcome.status_code, len(outcome.content), ms
        )
    else:
        log.debug("%s → %s, %.0f ms", shown, outcome or "no answer before the deadline", ms)


async def _wait_for_budget(state: RateLimitState, deadline: float, shown: _Shown) -> None:
    while True:
        wait = None
        if state.shared is not None:  # the cluster's budget first
            wait = await state.shared.take(state.limit or DEFAULT_LIMIT)
        if wait is None:  # alone: this node's own view (and its share)
            wait = state.delay()
        if wait <= 0:
            break
        if trio.current_time() + wait > deadline:
            raise DeadlineExceeded(
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
    transport = threaded_transport(client)
    if transport is not None and client.auth is None and not any(client.event_hooks.values()):
        response = await _exchange_below_httpx(transport, request, raw)
        if not (follow_redirects and response.is_redirect):
            return response
        # A redirect to follow (rare: signed storage URLs answer in place): httpx's client
        # follows it, with its rules for the headers that may cross to another origin; the
        # request is sent once more for it.
    try:
        response = await client.send(request, stream=True, follow_redirects=follow_redirects)
    except RETRYABLE_TRANSPORT_ERRORS as exc:
        raise _Retryable(
            _describe_exception(exc), connect=isinstance(exc, _CONNECT_ERRORS)
        ) from None
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
    return _whole(request, response.status_code, response.headers, body, raw or pre_read)


async def _exchange_below_httpx(
    transport: ThreadedTransport, request: httpx.Request, raw: bool
) -> httpx.Response:
    """The same attempt through the threaded transport directly: the client's layers
    (cookies, auth, event hooks, redirects, an interim response object) are skipped; the
    transport reads the whole body and raises httpx's exceptions, classified as above. The
    mount keeps no cookies on purpose: a platform's API is authenticated by its token, and a
    storage host's cookie must never travel to another request. It sets no auth or hooks on
    its client; a client that has them (a test's) is sent through ``client.send``, and so is
    a request whose answer is a redirect it must follow."""
    try:
        _, status, _, headers, body = await transport.exchange(request)
    except RETRYABLE_TRANSPORT_ERRORS as exc:
        raise _Retryable(
            _describe_exception(exc), connect=isinstance(exc, _CONNECT_ERRORS)
        ) from None
    except httpx.HTTPError as exc:  # bad URL scheme, local protocol error
        raise ProtocolError(
            f"{request.method} {redact_url(str(request.url))}: {_describe_exception(exc)}"
        ) from None
    return _whole(request, status, httpx.Headers(headers), body, raw)


def _whole(
    request: httpx.Request, status: int, headers: httpx.Headers, body: bytes, decoded: bool
) -> httpx.Response:
    """The final response: the body checked against its declared length; ``decoded``: the
    body is not (or no longer) encoded, so ``Content-Encoding`` is dropped."""
    declared = promised_length(request.method, status, headers)
    if declared is not None and len(body) < declared:
        raise _Retryable(f"HTTP {status} body cut short at {len(body)} of {declared} bytes")
    if decoded:
        headers = httpx.Headers(
            [(k, v) for k, v in headers.multi_items() if k.lower() != "content-encoding"]
        )
    try:
        # Response(content=...) decodes a remaining Content-Encoding once, as httpx would have.
        return httpx.Response(status, headers=headers, content=body, request=request)
    except httpx.DecodingError as exc:
        raise ProtocolError(
            f"{request.method} {redact_url(str(request.url))}: undecodable body ({exc})"
        ) from None


def _build(
    client: httpx.AsyncClient,
    method: str,
    url: str | httpx.URL,
    headers: Mapping[str, str] | None,
    query: httpx.QueryParams | None,
) -> httpx.Request:
    """``client.build_request``, without what the mount's client never has (a base URL to
    join, cookies or default parameters to merge): the client's headers, then these, and its
    timeouts. A client with any of those gets ``build_request`` itself."""
    if client.base_url.raw_path != b"/" or client.base_url.host or client.cookies or client.params:
        return client.build_request(method, url, headers=headers, params=query)
    merged = client.headers.copy()
    if headers:
        merged.update(headers)
    return httpx.Request(
        method, url, params=query, headers=merged, extensions={"timeout": client.timeout.as_dict()}
    )


class _Shown:
    """``METHOD URL`` with the URL redacted, for messages: made only when one is written
    (most requests never need it, and redacting costs more than the request's bookkeeping)."""

    __slots__ = ("_request", "_text")

    def __init__(self, request: httpx.Request) -> None:
        self._request = request
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:
            self._text = f"{self._request.method} {redact_url(str(self._request.url))}"
        return self._text

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _status_error(shown: _Shown, response: httpx.Response) -> RemoteError:
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
