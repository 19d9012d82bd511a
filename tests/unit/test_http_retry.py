"""remotefs.http: retries, deadlines, rate limits, range checks, single-flight.

Every test runs on httpx.MockTransport under pytest-trio's ``autojump_clock``: waits cost no
real time, and ``trio.current_time()`` shows exactly how long ``send`` waited.
"""

from __future__ import annotations

import gzip
import json as jsonlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import trio

from remotefs.concurrency import SingleFlight, gather_limited
from remotefs.errors import (
    AccessDenied,
    DeadlineExceeded,
    NotFound,
    ProtocolError,
    Stale,
    Transient,
)
from remotefs.http import send as send_module
from remotefs.http.client import make_client
from remotefs.http.ranges import range_body
from remotefs.http.ratelimit import RateLimitState
from remotefs.http.retry import RetryPolicy
from remotefs.http.send import give_up_connecting_after, send
from remotefs.http.wire import parse_http_date_ns, parse_iso8601_ns
from remotefs.metrics import Metrics

URL = "http://api.test/v2/files"
POLICY = RetryPolicy()


def reply(
    status: int,
    body: bytes | None = None,
    *,
    json: object = None,
    headers: dict[str, str] | None = None,
) -> Callable[[], httpx.Response]:
    """A factory of fresh streamed responses, as a real transport gives (and with a
    ``Content-Length`` unless ``headers`` sets one)."""
    if json is not None:
        body = jsonlib.dumps(json).encode()
    data = body or b""
    all_headers = {"Content-Length": str(len(data)), **(headers or {})}
    return lambda: httpx.Response(status, headers=all_headers, stream=httpx.ByteStream(data))


class Recorder:
    """A MockTransport handler answering from a script (the last item repeats), recording
    every request and the trio time it came at."""

    def __init__(self, *script: Callable[[], httpx.Response] | Exception) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(trio.current_time())
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return item()


def client_for(handler: Callable[[httpx.Request], object]) -> httpx.AsyncClient:
    return make_client(transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


async def call(handler: Recorder, method: str = "GET", url: str = URL, **kwargs: object):
    kwargs.setdefault("deadline", trio.current_time() + POLICY.operation_timeout)
    kwargs.setdefault("policy", POLICY)
    async with client_for(handler) as client:
        return await send(client, method, url, **kwargs)  # type: ignore[arg-type]


async def test_503_then_200_is_retried(autojump_clock) -> None:
    handler = Recorder(reply(503, json={"message": "busy"}), reply(200, json={}))
    response = await call(handler)
    assert response.status_code == 200 and len(handler.requests) == 2


async def test_transport_errors_are_retried(autojump_clock) -> None:
    handler = Recorder(
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("read timed out"),
        reply(200, b"ok"),
    )
    response = await call(handler)
    assert response.content == b"ok" and len(handler.requests) == 3


async def test_429_retry_after_is_honoured(autojump_clock) -> None:
    handler = Recorder(
        reply(429, headers={"Retry-After": "7"}, json={"error": {"message": "slow"}}),
        reply(200),
    )
    start = trio.current_time()
    await call(handler)
    waited = handler.times[1] - handler.times[0]
    assert 7 <= waited <= 7 + POLICY.base_delay
    assert trio.current_time() - start >= 7


async def test_retry_after_as_http_date(autojump_clock) -> None:
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 20))
    handler = Recorder(reply(503, headers={"Retry-After": when}), reply(200))
    await call(handler)
    assert 18 <= handler.times[1] - handler.times[0] <= 21


async def test_sb_429_waits_for_x_ratelimit_reset(autojump_clock) -> None:
    reset = int(time.time()) + 6
    headers = {"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "0"}
    handler = Recorder(
        reply(429, headers={**headers, "X-RateLimit-Reset": str(reset)}),
        reply(200),
    )
    await call(handler)
    # The wait is computed from the wall clock at the time of the 429 (sub-second slack).
    assert 4.9 <= handler.times[1] - handler.times[0] <= 6.5


async def test_spent_budget_waits_for_reset_instead_of_sending(autojump_clock) -> None:
    # The autojump clock moves trio time only: the state's wall clock must follow it.
    wall0, trio0 = time.time(), trio.current_time()
    state = RateLimitState(clock=lambda: wall0 + trio.current_time() - trio0)
    reset = int(wall0) + 4
    limits = {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset),
    }
    handler = Recorder(reply(200, headers=limits))
    async with client_for(handler) as client:
        await send(client, "GET", URL, deadline=trio.current_time() + 30, rate_limit=state)
        assert (state.remaining, state.reset) == (0, reset)
        await send(client, "GET", URL, deadline=trio.current_time() + 30, rate_limit=state)
    assert len(handler.requests) == 2  # no request was spent on a certain 429
    assert handler.times[1] - trio0 == pytest.approx(reset - wall0 + 0.25)


async def test_spent_budget_past_the_deadline_fails_fast(autojump_clock) -> None:
    state = RateLimitState(limit=5, remaining=0, reset=time.time() + 120)
    handler = Recorder(reply(200))
    start = trio.current_time()
    with pytest.raises(Transient, match="budget"):
        await call(handler, rate_limit=state)
    assert handler.requests == [] and trio.current_time() == start


def test_rate_limit_state_accounts_for_requests_in_flight() -> None:
    now = [1000.0]
    state = RateLimitState(clock=lambda: now[0])
    state.observe(
        httpx.Headers(
            {"x-ratelimit-limit": "5", "x-ratelimit-remaining": "3", "x-ratelimit-reset": "1002"}
        )
    )
    state.spend()
    state.spend()
    # A response sent before our two requests must not raise the count back.
    state.observe(httpx.Headers({"x-ratelimit-remaining": "3", "x-ratelimit-reset": "1002"}))
    assert state.remaining == 1
    state.spend()
    assert state.delay() == pytest.approx(2.25)
    now[0] = 1002.5  # window over: assume the full budget until told otherwise
    assert state.delay() == 0 and (state.remaining, state.reset) == (5, None)
    state.observe(httpx.Headers({"x-ratelimit-remaining": "9", "x-ratelimit-reset": "1005"}))
    assert state.remaining == 5  # the smaller of our estimate and the server's
    state.observe(httpx.Headers({"x-ratelimit-remaining": "2", "x-ratelimit-reset": "1001"}))
    assert (state.remaining, state.reset) == (5, 1005)  # an older window is ignored


class Cluster:
    """A shared budget that cannot answer: the node is one of ``share`` members."""

    def __init__(self, share: int) -> None:
        self.share = share

    async def take(self, limit: int) -> float | None:
        return None

    def observe(self, limit: int | None, remaining: int, reset: float) -> None:
        pass


def test_alone_in_a_cluster_a_node_keeps_to_its_share_of_what_was_left() -> None:
    now = [1000.0]
    cluster = Cluster(share=3)
    state = RateLimitState(clock=lambda: now[0], shared=cluster)
    headers = {
        "x-ratelimit-limit": "100",
        "x-ratelimit-remaining": "30",
        "x-ratelimit-reset": "1020",
    }
    state.observe(httpx.Headers(headers))
    sent = 0
    while state.delay() == 0:
        state.spend()
        sent += 1
    assert sent == 10, "a third of the 30 left, not a third of the 100"
    # a new window (its first answer says so): a third of what it has left
    now[0] = 1021.0
    assert state.delay() == 0
    state.observe(
        httpx.Headers({**headers, "x-ratelimit-remaining": "90", "x-ratelimit-reset": "1050"})
    )
    sent = 0
    while state.delay() == 0:
        state.spend()
        sent += 1
    assert sent == 30
    cluster.share = 1  # back in the cluster (or alone for good): the whole of what is left
    assert state.delay() == 0


async def test_404_is_not_retried(autojump_clock) -> None:
    handler = Recorder(reply(404, json={"message": "Requested file does not exist."}))
    with pytest.raises(NotFound, match="Requested file does not exist"):
        await call(handler)
    assert len(handler.requests) == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, AccessDenied), (403, AccessDenied), (400, ProtocolError), (416, ProtocolError)],
)
async def test_final_statuses_are_mapped(autojump_clock, status, error) -> None:
    handler = Recorder(reply(status))
    with pytest.raises(error, match=f"GET {URL}: HTTP {status}"):
        await call(handler)
    assert len(handler.requests) == 1


async def test_unexpected_success_status_is_a_protocol_error(autojump_clock) -> None:
    with pytest.raises(ProtocolError, match="HTTP 302"):
        await call(Recorder(reply(302, headers={"Location": "http://elsewhere/"})))


async def test_deadline_exceeded_is_transient(autojump_clock) -> None:
    handler = Recorder(reply(503))
    start = trio.current_time()
    with pytest.raises(Transient, match=r"GET http://api\.test/v2/files: .*deadline.*HTTP 503"):
        await call(handler, deadline=start + 3)
    assert trio.current_time() <= start + 3
    assert len(handler.requests) >= 2


async def test_server_wait_past_the_deadline_is_not_started(autojump_clock) -> None:
    handler = Recorder(reply(429, headers={"Retry-After": "60"}))
    start = trio.current_time()
    with pytest.raises(Transient, match="deadline"):
        await call(handler, deadline=start + 30)
    assert trio.current_time() == start and len(handler.requests) == 1


async def test_hung_server_answers_transient_at_the_deadline(autojump_clock) -> None:
    calls = []

    async def hang_after_a_503(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(503, stream=httpx.ByteStream(b""))
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    start = trio.current_time()
    async with client_for(hang_after_a_503) as client:
        with pytest.raises(Transient) as info:
            await send(client, "GET", URL, deadline=start + 5)
    assert trio.current_time() == pytest.approx(start + 5)
    assert str(info.value) == (
        f"GET {URL}: no complete answer before the operation's deadline "
        "(attempt 2; before: HTTP 503)"
    )


async def test_attempts_are_bounded(autojump_clock) -> None:
    handler = Recorder(reply(500))
    with pytest.raises(Transient, match="gave up after 3 attempts; last: HTTP 500"):
        await call(handler, policy=RetryPolicy(max_attempts=3), deadline=trio.current_time() + 1e6)
    assert len(handler.requests) == 3


async def test_backoff_is_exponential_with_jitter_and_capped(autojump_clock) -> None:
    handler = Recorder(reply(503))
    policy = RetryPolicy(max_attempts=9)
    with pytest.raises(Transient):
        await call(handler, policy=policy, deadline=trio.current_time() + 1e6)
    waits = [b - a for a, b in zip(handler.times, handler.times[1:], strict=False)]
    for attempt, wait in enumerate(waits, start=1):
        assert 0 <= wait <= min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1)) + 1e-9


async def test_post_is_not_retried(autojump_clock) -> None:
    handler = Recorder(reply(503), reply(200))
    with pytest.raises(Transient, match="never retried"):
        await call(handler, method="POST")
    assert len(handler.requests) == 1
    handler = Recorder(httpx.ConnectError("refused"), reply(200))
    with pytest.raises(Transient, match="ConnectError"):
        await call(handler, method="POST")
    assert len(handler.requests) == 1


async def test_body_shorter_than_content_length_is_retried(autojump_clock) -> None:
    short = reply(206, b"01234", headers={"Content-Length": "10"})
    handler = Recorder(short, reply(206, b"0123456789"))
    response = await call(handler, expected=(206,))
    assert response.content == b"0123456789" and len(handler.requests) == 2


class DroppingStream(httpx.AsyncByteStream):
    """A body that loses its connection after the first chunk."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"01234"
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


async def test_connection_dropped_mid_body_is_retried(autojump_clock) -> None:
    def dropped() -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": "10"}, stream=DroppingStream())

    handler = Recorder(dropped, reply(200, b"0123456789"))
    response = await call(handler)
    assert response.content == b"0123456789" and len(handler.requests) == 2


async def test_short_206_without_content_length_is_retried(autojump_clock) -> None:
    def handler_fn(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        body = b"abc" if len(calls) == 1 else b"abcdef"
        return httpx.Response(
            206, headers={"Content-Range": "bytes 0-5/100"}, stream=httpx.ByteStream(body)
        )

    calls: list[httpx.Request] = []
    async with client_for(handler_fn) as client:
        response = await send(
            client, "GET", URL, deadline=trio.current_time() + 30, expected=(206,)
        )
    assert response.content == b"abcdef" and len(calls) == 2


async def test_raw_mode_keeps_encoded_bytes(autojump_clock) -> None:
    stored = gzip.compress(b"hello " * 100)
    encoded = reply(200, stored, headers={"Content-Encoding": "gzip"})
    assert (await call(Recorder(encoded))).content == b"hello " * 100  # JSON calls: decoded
    raw = await call(
        Recorder(reply(200, stored, headers={"Content-Encoding": "gzip"})),
        raw=True,
    )
    assert raw.content == stored and "content-encoding" not in raw.headers


async def test_head_keeps_content_length(autojump_clock) -> None:
    handler = Recorder(reply(200, headers={"Content-Length": "12345"}))
    response = await call(handler, method="HEAD")
    assert response.content == b""
    assert response.headers["content-length"] == "12345"


async def test_messages_and_logs_never_hold_secrets(autojump_clock, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="remotefs.http.send")
    url = "http://s3.test/bucket/key?AWSAccessKeyId=AK&Expires=1&Signature=SIGNATURE-SECRET"
    handler = Recorder(httpx.ReadTimeout("timed out"), reply(503))
    with pytest.raises(Transient) as info:
        await call(
            handler,
            url=url,
            headers={"X-SBG-Auth-Token": "TOKEN-SECRET"},
            deadline=trio.current_time() + 2,
        )
    assert handler.requests[0].headers["x-sbg-auth-token"] == "TOKEN-SECRET"
    text = str(info.value) + caplog.text
    assert "Signature=***" in str(info.value)
    assert "SIGNATURE-SECRET" not in text and "TOKEN-SECRET" not in text
    assert "attempt 1 failed (ReadTimeout" in caplog.text


async def test_client_carries_no_credentials() -> None:
    async with make_client() as client:
        assert not any(k.lower() in ("authorization", "x-sbg-auth-token") for k in client.headers)
        assert client.follow_redirects is False


# --- range_body -----------------------------------------------------------------------------


def ranged(status: int, body: bytes, content_range: str | None = None) -> httpx.Response:
    headers = {"Content-Range": content_range} if content_range else {}
    return httpx.Response(status, headers=headers, content=body)


def test_range_body_accepts_an_exact_206() -> None:
    assert range_body(ranged(206, b"cdef", "bytes 2-5/10"), 2, 4, 10, "f") == b"cdef"


@pytest.mark.parametrize(
    ("response", "error", "match"),
    [
        (ranged(206, b"cdef"), ProtocolError, "Content-Range"),
        (ranged(206, b"cdef", "bytes 3-6/10"), ProtocolError, "asked for bytes 2-5, got 3-6"),
        (ranged(206, b"cde", "bytes 2-5/10"), ProtocolError, "3 bytes, expected 4"),
        (ranged(206, b"cdef", "bytes 2-5/11"), Stale, "now 11 bytes"),
        (ranged(200, b"0123456789"), ProtocolError, "ignored Range"),
    ],
)
def test_range_body_refuses_anything_else(response, error, match) -> None:
    with pytest.raises(error, match=match):
        range_body(response, 2, 4, 10, "f")


def test_range_body_takes_a_200_only_for_the_whole_file() -> None:
    assert range_body(ranged(200, b"0123456789"), 0, 10, 10, "f") == b"0123456789"
    with pytest.raises(ProtocolError, match="9 bytes, expected 10"):
        range_body(ranged(200, b"012345678"), 0, 10, 10, "f")


# --- concurrency helpers --------------------------------------------------------------------


async def test_single_flight_shares_one_fetch(autojump_clock) -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    calls = []

    async def fetch() -> int:
        calls.append(1)
        await trio.sleep(1)
        return 42

    results = []

    async def caller() -> None:
        results.append(await flights.run("k", fetch))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(caller)
    assert results == [42] * 5 and len(calls) == 1
    assert await flights.run("k", fetch) == 42 and len(calls) == 2  # nothing kept afterwards


async def test_single_flight_shares_errors_and_survives_a_cancelled_leader(autojump_clock) -> None:
    flights: SingleFlight[str, int] = SingleFlight()

    async def failing() -> int:
        await trio.sleep(1)
        raise Transient("down")

    errors = []

    async def caller() -> None:
        try:
            await flights.run("k", failing)
        except Transient as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(caller)
    assert len(errors) == 3 and len({id(e) for e in errors}) == 3

    async def slow() -> int:
        await trio.sleep(10)
        return 7

    got = []
    leader_scope = trio.CancelScope()

    async def leader() -> None:
        with leader_scope:
            await flights.run("j", slow)

    async def follower() -> None:
        got.append(await flights.run("j", slow))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leader)
        await trio.sleep(1)
        nursery.start_soon(follower)
        await trio.sleep(1)
        leader_scope.cancel()  # the follower must take over, not fail
    assert got == [7]


async def test_gather_limited_keeps_order_bounds_concurrency_and_raises_plainly(
    autojump_clock,
) -> None:
    running = 0
    peak = 0

    async def work(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(1 + (i % 3))
        running -= 1
        return i * i

    assert await gather_limited([lambda i=i: work(i) for i in range(20)], 4) == [
        i * i for i in range(20)
    ]
    assert peak == 4

    async def maybe_fail(i: int) -> int:
        await trio.sleep(i)
        if i == 2:
            raise NotFound("gone")
        return i

    with pytest.raises(NotFound, match="gone"):
        await gather_limited([lambda i=i: maybe_fail(i) for i in range(6)], 8)


# --- timestamps -----------------------------------------------------------------------------


def test_timestamps() -> None:
    assert parse_iso8601_ns("2019-08-07T13:28:01Z") == 1565184481 * 10**9
    assert parse_iso8601_ns("2019-08-07T13:28:01.250000Z") == 1565184481 * 10**9 + 250_000_000
    assert parse_iso8601_ns("2019-08-07T15:28:01+02:00") == 1565184481 * 10**9
    assert parse_iso8601_ns("2019-08-07T13:28:01") == 1565184481 * 10**9
    assert parse_iso8601_ns("yesterday") is None and parse_iso8601_ns(None) is None
    assert parse_http_date_ns("Wed, 07 Aug 2019 13:28:01 GMT") == 1565184481 * 10**9
    assert parse_http_date_ns("garbage") is None


async def test_a_mounts_first_request_gives_up_connecting_within_its_budget(
    autojump_clock,
) -> None:
    """A host that refuses, and one that never answers (packets dropped): either way the
    mount's first request says so within the budget, not after the whole deadline."""
    refused = Recorder(httpx.ConnectError("Connection refused"))

    async def blackhole(request: httpx.Request) -> httpx.Response:
        await trio.sleep_forever()
        raise AssertionError

    for transport in (httpx.MockTransport(refused), httpx.MockTransport(blackhole)):
        start = trio.current_time()
        with give_up_connecting_after(3.0):
            async with make_client(transport=transport) as client:
                with pytest.raises(Transient) as info:
                    await send(client, "GET", URL, deadline=start + 30)
        assert trio.current_time() - start <= 3.0 + 1e-6
        assert not isinstance(info.value, DeadlineExceeded)
    start = trio.current_time()  # outside the block: retried on, past the budget
    refused = Recorder(httpx.ConnectError("Connection refused"))
    with pytest.raises(Transient):
        await call(refused, deadline=start + 30)
    assert trio.current_time() - start > 3.0 and len(refused.requests) == POLICY.max_attempts


async def test_a_request_its_caller_cancelled_is_not_an_error(
    autojump_clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = Metrics()
    monkeypatch.setattr(send_module, "METRICS", metrics)
    busy = reply(503, headers={"Retry-After": "5"})
    with trio.move_on_after(1) as scope:  # during the wait to retry
        await call(Recorder(busy, reply(200)), kind="listing")
    assert scope.cancelled_caught
    counts = metrics.requests["listing"]
    assert (counts.requests, counts.attempts, counts.errors) == (1, 1, 0)
    with pytest.raises(NotFound):  # a request that failed is one
        await call(Recorder(reply(404)), kind="listing")
    assert (counts.requests, counts.attempts, counts.errors) == (2, 2, 1)
