"""bench.front: what a request costs through a latency front, in round trips, and its counters.

A front at RTT 100 ms forwards to an echo server on 127.0.0.1 (a thread of this process);
a blocking client times each exchange with the monotonic clock. A request on a fresh
connection costs the TCP handshake's round trip and its own (>= 2 RTT, < 3 RTT), on a
reused connection one (>= 1, < 2); TLS 1.3 adds one round trip, TLS 1.2 two, a resumed
TLS 1.2 handshake one. Lower bounds are the model's; upper bounds leave the machine most of
a round trip of slack. No sleeps: every wait is a socket read with a timeout.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.front import Front, FrontCounts, ThrowawayCA, running_front

RTT = 0.1
TIMEOUT = 10.0
PING = b"ping"


class Echo:
    """Echoes every byte back on every connection, each in a thread; closed on stop."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                return

    def stop(self) -> None:
        self.listener.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    return ThrowawayCA(Path(tmp_path_factory.mktemp("ca")))


def _exchange(sock: socket.socket | ssl.SSLSocket) -> None:
    sock.sendall(PING)
    got = b""
    while len(got) < len(PING):
        data = sock.recv(len(PING) - len(got))
        assert data, "the front closed the connection"
        got += data
    assert got == PING


def _connect(front: Front) -> socket.socket:
    return socket.create_connection(("127.0.0.1", front.port), timeout=TIMEOUT)


def _round_trips(t0: float) -> float:
    return (time.monotonic() - t0) / RTT


def test_a_fresh_connection_costs_two_round_trips_a_reused_one_one(echo: Echo) -> None:
    with running_front(("127.0.0.1", echo.port)) as front:
        front.rtt = RTT
        t0 = time.monotonic()
        with _connect(front) as sock:
            _exchange(sock)
            fresh = _round_trips(t0)
            t1 = time.monotonic()
            _exchange(sock)
            reused = _round_trips(t1)
        assert 2 <= fresh < 3
        assert 1 <= reused < 2
        ended = front.wait(lambda c: c.closed == 1, TIMEOUT)
        assert ended == FrontCounts(connections=1, closed=1, bytes_up=8, bytes_down=8)
        front.reset()
        assert front.counts() == FrontCounts()


def test_at_rtt_zero_nothing_waits(echo: Echo) -> None:
    with running_front(("127.0.0.1", echo.port)) as front:
        t0 = time.monotonic()
        with _connect(front) as sock:
            _exchange(sock)
        assert _round_trips(t0) < 1


def _tls_client(ca: ThrowawayCA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.trust(context)
    return context


def _tls_request(
    front: Front, client: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[float, ssl.SSLSession | None, bool]:
    """One request on a new TLS connection: (round trips, the session, was it resumed)."""
    t0 = time.monotonic()
    with client.wrap_socket(_connect(front), server_hostname="127.0.0.1", session=session) as s:
        _exchange(s)
        return _round_trips(t0), s.session, s.session_reused


@pytest.mark.parametrize(("version", "handshake_rtts"), [("1.3", 1), ("1.2", 2)])
def test_a_tls_handshake_costs_its_round_trips(
    echo: Echo, ca: ThrowawayCA, version: str, handshake_rtts: int
) -> None:
    with running_front(("127.0.0.1", echo.port), ca.server_context(version)) as front:
        front.rtt = RTT
        rtts, _, _ = _tls_request(front, _tls_client(ca))
        assert 2 + handshake_rtts <= rtts < 3 + handshake_rtts
        counts = front.counts()
        assert (counts.connections, counts.tls_handshakes, counts.tls_resumed) == (1, 1, 0)
        assert counts.tls_failed == 0


def test_a_resumed_tls_1_2_handshake_costs_one_round_trip_and_is_counted(
    echo: Echo, ca: ThrowawayCA
) -> None:
    with running_front(("127.0.0.1", echo.port), ca.server_context("1.2")) as front:
        client = _tls_client(ca)
        _, session, resumed = _tls_request(front, client)
        assert session is not None and not resumed
        front.rtt = RTT
        front.reset()
        rtts, _, resumed = _tls_request(front, client, session)
        assert resumed
        assert 3 <= rtts < 4
        counts = front.counts()
        assert (counts.connections, counts.tls_handshakes, counts.tls_resumed) == (1, 1, 1)


def test_an_untrusting_client_fails_its_handshake_and_it_is_counted(
    echo: Echo, ca: ThrowawayCA
) -> None:
    with running_front(("127.0.0.1", echo.port), ca.server_context("1.3")) as front:
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(_connect(front), server_hostname="127.0.0.1")
        counts = front.wait(lambda c: c.closed == 1, TIMEOUT)
        assert (counts.connections, counts.tls_failed, counts.tls_handshakes) == (1, 1, 0)
