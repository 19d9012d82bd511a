"""remotefs.transport: whole bodies, pooled connections, httpx's errors, prompt cancellation.

Each test talks to a scripted HTTP/1.1 server on 127.0.0.1 (a thread of this process: the
transport is tested over a real socket, the way the mount uses it). The script decides, per
request, what bytes go back and whether the connection stays open; the server records every
request head and counts the connections it accepted. The TLS tests give it a certificate
from a throwaway CA (trustme) that only the client under test trusts.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import ssl
import threading
import tracemalloc
from collections.abc import Callable, Iterator

import httpx
import pytest
import trio
import trustme

from remotefs import transport as transport_module
from remotefs.http.client import make_client
from remotefs.http.send import send
from remotefs.pool import ConnectionPool
from remotefs.transport import ThreadedTransport
from remotefs.workers import Workers

SECRET_PATH = "/bucket/object?X-Amz-Signature=SIGNATURE-SECRET"

Reply = Callable[[int, bytes, socket.socket], bool]
"""(request number, request head, socket) → keep the connection open?"""


class ScriptedServer:
    def __init__(self, reply: Reply, tls: ssl.SSLContext | None = None) -> None:
        self.reply = reply
        self.tls = tls
        self.heads: list[bytes] = []
        self.accepted = 0
        self.heard = threading.Event()  # a client sent its first bytes
        self.peer_closed = threading.Event()  # a client closed a connection
        self.hung_up = threading.Event()  # the script closed a connection
        self.release = threading.Event()  # ends the replies that stall on purpose
        self.changed = threading.Condition()  # notified on each accept and handshake
        self.live: list[socket.socket] = []  # connections not yet closed by either side
        self.resumed: list[bool] = []  # per TLS handshake: did it resume a session?
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def url(self, path: str = "/file") -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self.changed:
                self.accepted += 1
                self.live.append(conn)
                self.changed.notify_all()
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        if self.tls is not None:
            try:
                tls = self.tls.wrap_socket(conn, server_side=True)
            except OSError:  # the client refused our certificate (or left before it ended)
                conn.close()
                return
            with self.changed:
                self.resumed.append(tls.session_reused)
                self.live = [tls if c is conn else c for c in self.live]
                self.changed.notify_all()
            conn = tls
        with conn:
            pending = b""
            while True:
                while b"\r\n\r\n" not in pending:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        self.peer_closed.set()
                        return
                    self.heard.set()
                    pending += data
                head, _, pending = pending.partition(b"\r\n\r\n")
                self.heads.append(head)
                if not self.reply(len(self.heads), head, conn):
                    break
        self.hung_up.set()

    def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait (bounded) until ``condition()`` holds, re-checked on each accept/handshake."""
        with self.changed:
            return self.changed.wait_for(condition, timeout)

    def drop_idle(self) -> int:
        """Close every connection open now (a server's idle timeout); how many it closed."""
        with self.changed:
            live, self.live = self.live, []
        for conn in live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        return len(live)

    def close(self) -> None:
        self.release.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
        self._listener.close()
        self._accepting.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(reply: Reply, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        servers.append(ScriptedServer(reply, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def response(body: bytes, *, status: str = "200 OK", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode("latin-1") + body
    )


def client(
    timeout: float = 10.0, trust: ssl.SSLContext | None = None, slots: int = 32
) -> httpx.AsyncClient:
    transport = ThreadedTransport(max_connections=slots, ssl_context=trust)
    return httpx.AsyncClient(transport=transport, timeout=timeout)


BODY = os.urandom(3 << 20)


async def test_a_body_arrives_whole_with_its_headers(serve) -> None:
    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        data = response(BODY, status="206 Partial Content", extra="X-Answer: 42\r\n")
        for start in range(0, len(data), 100_000):  # many segments, as a network delivers
            conn.sendall(data[start : start + 100_000])
        return True

    server = serve(reply)
    async with client() as c:
        r = await c.get(server.url(), headers={"Range": "bytes=0-3145727", "X-Token": "t"})
    assert r.status_code == 206 and r.reason_phrase == "Partial Content"
    assert r.content == BODY
    assert r.headers["x-answer"] == "42"
    lines = server.heads[0].split(b"\r\n")
    assert lines[0] == b"GET /file HTTP/1.1"
    names = [line.split(b":")[0].lower() for line in lines[1:]]
    assert names.count(b"host") == 1 and names.count(b"accept-encoding") == 1
    assert b"Range: bytes=0-3145727" in lines and b"X-Token: t" in lines


async def test_a_body_read_and_dropped_is_freed_without_the_cycle_collector(serve) -> None:
    """httpx ties every response into a reference cycle; a body must not stay pinned by it
    until the cyclic collector happens to run (it pinned ~20 read-ahead bodies, 88 MiB)."""
    server = serve(lambda n, head, conn: conn.sendall(response(BODY)) or True)
    gc.disable()
    tracemalloc.start()
    try:
        async with client() as c:
            for _ in range(10):
                r = await send(c, "GET", server.url(), deadline=trio.current_time() + 10, raw=True)
                assert r.content == BODY
                del r
            held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    assert held < 2 * len(BODY)


async def test_one_connection_serves_requests_one_after_another(serve) -> None:
    server = serve(lambda n, head, conn: conn.sendall(response(b"x" * n)) or True)
    async with client() as c:
        bodies = [(await c.get(server.url())).content for _ in range(3)]
    assert bodies == [b"x", b"xx", b"xxx"]
    assert server.accepted == 1


async def test_an_empty_body_leaves_the_connection_usable(serve) -> None:
    server = serve(lambda n, head, conn: conn.sendall(response(b"" if n == 1 else b"ok")) or True)
    async with client() as c:
        assert (await c.get(server.url())).content == b""
        assert (await c.get(server.url())).content == b"ok"
    assert server.accepted == 1


async def test_a_head_answer_has_no_body(serve) -> None:
    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" if n == 1 else response(b"ok")
        )
        return True

    server = serve(reply)
    async with client() as c:
        r = await c.head(server.url())
        assert r.content == b"" and r.headers["content-length"] == "100"
        assert (await c.get(server.url())).content == b"ok"
    assert server.accepted == 1


async def test_a_connection_the_server_closed_while_idle_is_replaced(serve) -> None:
    # The server closes after each answer without saying so (no "Connection: close"): the
    # pooled connection is dead when the next request comes, and that request still works.
    server = serve(lambda n, head, conn: conn.sendall(response(b"%d" % n)) and False)
    async with client() as c:
        first = await c.get(server.url())
        assert await trio.to_thread.run_sync(server.hung_up.wait, 5)
        second = await c.get(server.url())
    assert (first.content, second.content) == (b"1", b"2")
    assert server.accepted == 2 and len(server.heads) == 2


def hang_up_on_request_2(n: int, head: bytes, conn: socket.socket) -> bool:
    """Answer every request with its number, except request 2: close the connection on it."""
    if n == 2:
        return False
    conn.sendall(response(b"%d" % n))
    return True


async def test_a_reused_connection_closed_under_a_get_is_retried_once(serve) -> None:
    # Request 2 finds the pooled connection open, and the server closes it on reading the
    # request (its keep-alive timeout, at the worst moment): a GET goes again, on a new one.
    server = serve(hang_up_on_request_2)
    async with client() as c:
        assert (await c.get(server.url())).content == b"1"
        assert (await c.get(server.url())).content == b"3"
    assert server.accepted == 2 and len(server.heads) == 3


async def test_a_post_is_never_sent_twice(serve) -> None:
    server = serve(hang_up_on_request_2)
    async with client() as c:
        assert (await c.get(server.url())).content == b"1"
        with pytest.raises(httpx.RemoteProtocolError, match="without a response"):
            await c.post(server.url(), content=b"x")
    assert server.accepted == 1 and len(server.heads) == 2


async def test_informational_answers_are_skipped(serve) -> None:
    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + response(b"final %d" % n))
        return True

    server = serve(reply)
    async with client() as c:
        first = await c.get(server.url())
        second = await c.get(server.url())
    assert (first.status_code, first.content) == (200, b"final 1")
    assert (second.status_code, second.content) == (200, b"final 2")
    assert server.accepted == 1


async def test_an_http_1_0_answer_is_read_and_its_connection_not_reused(serve) -> None:
    answer = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server = serve(lambda n, head, conn: conn.sendall(answer) or True)
    async with client() as c:
        r = await c.get(server.url())
        assert (r.http_version, r.content) == ("HTTP/1.0", b"ok")
        assert (await c.get(server.url())).content == b"ok"
    assert server.accepted == 2


async def test_header_values_are_trimmed_and_unfolded(serve) -> None:
    extra = 'ETag: "abc"   \r\nX-Folded: a\r\n  b\r\n'
    server = serve(lambda n, head, conn: conn.sendall(response(b"", extra=extra)) or True)
    async with client() as c:
        r = await c.get(server.url())
    assert (r.headers["etag"], r.headers["x-folded"]) == ('"abc"', "a b")


async def test_a_chunked_body_is_decoded(serve) -> None:
    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        return True

    server = serve(reply)
    async with client() as c:
        assert (await c.get(server.url())).content == b"hello world"


async def test_a_body_cut_short_is_an_error_never_short_bytes(serve) -> None:
    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        conn.sendall(response(b"a" * 1000)[:-500])
        return False

    server = serve(reply)
    async with client() as c:
        with pytest.raises(httpx.RemoteProtocolError) as info:
            await c.get(server.url(SECRET_PATH))
    assert "500 bytes into a body of 1000" in str(info.value)
    assert "SIGNATURE" not in str(info.value) and "bucket" not in str(info.value)


@pytest.mark.parametrize("declared", ["99999999999999999999999", str(1 << 62)])
async def test_a_false_huge_length_is_an_error_not_an_allocation(serve, declared: str) -> None:
    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\n\r\nabcd".encode())
        return False

    server = serve(reply)
    async with client() as c:
        with pytest.raises(httpx.RemoteProtocolError, match=f"4 bytes into a body of {declared}"):
            await c.get(server.url())


async def test_a_chunked_body_cut_short_is_an_error(serve) -> None:
    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        return False

    server = serve(reply)
    async with client() as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(server.url())


async def test_a_connection_closed_without_an_answer_is_a_protocol_error(serve) -> None:
    server = serve(lambda n, head, conn: False)
    async with client() as c:
        with pytest.raises(httpx.RemoteProtocolError, match="without a response"):
            await c.get(server.url(SECRET_PATH))
    assert server.accepted == 1  # a new connection is not tried twice


async def test_a_malformed_answer_is_a_protocol_error(serve) -> None:
    server = serve(lambda n, head, conn: conn.sendall(b"SPDY/9 what\r\n\r\n") and False)
    async with client() as c:
        with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
            await c.get(server.url())


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once it is closed
    async with client() as c:
        with pytest.raises(httpx.ConnectError, match=f"127.0.0.1:{port}"):
            await c.get(f"http://127.0.0.1:{port}{SECRET_PATH}")


async def test_a_host_name_that_cannot_be_looked_up_is_a_clear_error() -> None:
    # A 64-character label: the IDNA codec refuses it before any lookup or connect.
    async with client() as c:
        with pytest.raises(httpx.LocalProtocolError, match="host name .* is invalid") as info:
            await c.get(f"http://{'a' * 64}.invalid{SECRET_PATH}")
    assert "SIGNATURE" not in str(info.value)


async def test_a_server_that_never_answers_is_a_read_timeout(serve) -> None:
    server = serve(lambda n, head, conn: server.release.wait(30) and False)
    async with client(timeout=0.3) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get(server.url())


async def test_a_cancelled_exchange_ends_its_connection_at_once(serve) -> None:
    # Headers and half the body, then nothing: the caller's deadline passes long before the
    # 30 s read timeout, and the transport must close the socket, not leave a thread in recv.
    shut = threading.Event()

    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        if n > 1:
            conn.sendall(response(b"next"))
            return True
        conn.sendall(response(b"b" * 1000)[:-500])
        conn.settimeout(30)
        try:
            if conn.recv(1) == b"":  # returns as soon as the client's side is shut
                shut.set()
        except OSError:
            shut.set()
        return False

    server = serve(reply)
    async with client(timeout=30) as c:
        with trio.move_on_after(0.3) as scope:
            await c.get(server.url())
        assert scope.cancelled_caught
        assert await trio.to_thread.run_sync(shut.wait, 5)
        assert (await c.get(server.url())).content == b"next"  # on a new connection
    assert server.accepted == 2


@contextlib.contextmanager
def port_dropping_syns() -> Iterator[int]:
    """A loopback port whose accept queue is full: the kernel drops further SYNs there, so a
    connect to it hangs until its timeout, as one to a host behind a black hole does."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # room for one connection, which nobody accepts
        port = listener.getsockname()[1]
        filler.settimeout(5)
        filler.connect(("127.0.0.1", port))
        yield port


def connecting_to(port: int) -> int:
    """How many of this machine's IPv4 sockets are in SYN_SENT towards 127.0.0.1:``port``."""
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for row in rows if row[2] == f"0100007F:{port:04X}" and row[3] == "02")


async def test_a_cancelled_connect_ends_at_once(serve) -> None:
    answering = serve(answer_x)
    with port_dropping_syns() as port:
        async with client(timeout=30, slots=1) as c:  # a thread left behind holds the slot
            async with trio.open_nursery() as nursery:
                nursery.start_soon(c.get, f"http://127.0.0.1:{port}/file")
                with trio.fail_after(5):
                    while not connecting_to(port):  # the kernel's view: the SYN is out
                        await trio.sleep(0.001)
                nursery.cancel_scope.cancel()
            # the slot comes back only when the connecting thread has ended: long before the
            # 30 s connect timeout
            with trio.fail_after(5):
                assert (await c.get(answering.url())).content == b"x"


async def test_an_invalid_header_value_is_refused_without_showing_it(serve) -> None:
    server = serve(lambda n, head, conn: conn.sendall(response(b"")) or True)
    async with client() as c:
        with pytest.raises(httpx.LocalProtocolError) as info:
            await c.get(server.url(), headers={"X-Token": "TOKEN-SECRET\r\nX-Evil: 1"})
    assert "TOKEN-SECRET" not in str(info.value)
    assert server.heads == []


# --- TLS: the platforms' signed URLs are HTTPS ---------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_https_bodies_arrive_whole_on_one_verified_connection(serve, ca) -> None:
    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        conn.sendall(response(BODY if n == 1 else b"second"))
        return True

    server = serve(reply, server_tls(ca, "127.0.0.1"))
    async with client(trust=trusting(ca)) as c:
        first = await c.get(server.url())
        second = await c.get(server.url())
    assert (first.content, second.content) == (BODY, b"second")
    assert server.accepted == 1


def answer_x(n: int, head: bytes, conn: socket.socket) -> bool:
    conn.sendall(response(b"x"))
    return True


async def test_an_untrusted_certificate_is_refused(serve, ca) -> None:
    server = serve(answer_x, server_tls(ca, "127.0.0.1"))
    async with client() as c:  # trusts the usual CAs, not this test's
        with pytest.raises(httpx.ConnectError, match="TLS with 127.0.0.1") as info:
            await c.get(server.url(SECRET_PATH))
    assert "SIGNATURE" not in str(info.value)
    assert server.heads == []  # nothing was sent


async def test_a_certificate_for_another_name_is_refused(serve, ca) -> None:
    server = serve(answer_x, server_tls(ca, "storage.example"))
    async with client(trust=trusting(ca)) as c:
        with pytest.raises(httpx.ConnectError, match="TLS with 127.0.0.1"):
            await c.get(server.url())
    assert server.heads == []


async def test_a_cancelled_https_exchange_ends_its_connection_at_once(serve, ca) -> None:
    half_sent, shut = threading.Event(), threading.Event()

    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        conn.sendall(response(b"b" * 100_000)[:50_000])
        half_sent.set()
        conn.settimeout(30)
        try:
            if conn.recv(1) == b"":
                shut.set()
        except OSError:
            shut.set()
        return False

    server = serve(reply, server_tls(ca, "127.0.0.1"))
    async with client(timeout=30, trust=trusting(ca)) as c:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.get, server.url())
            assert await trio.to_thread.run_sync(half_sent.wait, 5)  # the body is under way
            nursery.cancel_scope.cancel()
        assert nursery.cancel_scope.cancelled_caught
        assert await trio.to_thread.run_sync(shut.wait, 5)


async def test_a_cancelled_tls_handshake_ends_at_once(serve, ca) -> None:
    silent = serve(lambda n, head, conn: False)  # plain TCP: never answers the ClientHello
    answering = serve(answer_x, server_tls(ca, "127.0.0.1"))
    async with client(timeout=30, trust=trusting(ca), slots=1) as c:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.get, f"https://127.0.0.1:{silent.port}/file")
            assert await trio.to_thread.run_sync(silent.heard.wait, 5)  # the ClientHello
            nursery.cancel_scope.cancel()
        with trio.fail_after(5):  # the handshake's 30 s timeout is not waited for
            assert (await c.get(answering.url())).content == b"x"


def test_make_client_uses_the_threaded_transport(monkeypatch) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "localhost")  # names no proxy: changes nothing
    assert isinstance(make_client()._transport, ThreadedTransport)


def test_make_client_leaves_proxies_to_httpx(monkeypatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    transport = make_client()._transport_for_url(httpx.URL("https://storage.example/x"))
    assert not isinstance(transport, ThreadedTransport)


# --- connections opened ahead: remotefs.pool ------------------------------------------------


def warm_client(warm: int = 4, trust: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    transport = ThreadedTransport(warm=warm, ssl_context=trust)
    return httpx.AsyncClient(transport=transport, timeout=10.0)


def pool_of(c: httpx.AsyncClient) -> ConnectionPool:
    transport = c._transport
    assert isinstance(transport, ThreadedTransport)
    return transport.pool


async def test_a_warmed_origin_has_its_connections_open_before_any_request(serve) -> None:
    server = serve(answer_x)
    async with warm_client() as c:
        transport = c._transport
        assert isinstance(transport, ThreadedTransport)
        transport.warm(server.url("/"))
        assert await trio.to_thread.run_sync(server.wait_until, lambda: server.accepted == 4)
        # three at once, as a BAM's head, index and tail: all on the open ones
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(c.get, server.url())
    assert server.accepted == 4 and len(server.heads) == 3


async def test_a_first_request_opens_the_others_beside_it(serve) -> None:
    server = serve(answer_x)
    async with warm_client() as c:
        # the request takes the first of those opened beside it; one more makes up the four
        assert (await c.get(server.url())).content == b"x"
        assert await trio.to_thread.run_sync(server.wait_until, lambda: server.accepted == 4)
        pool = pool_of(c)
        assert await trio.to_thread.run_sync(
            server.wait_until, lambda: pool.stats.opened_ahead == 4
        )
    assert len(server.heads) == 1 and server.accepted == 4


async def test_connections_the_server_closes_while_idle_are_reopened_without_a_request(
    serve,
) -> None:
    server = serve(answer_x)
    async with warm_client(warm=2) as c:
        pool = pool_of(c)
        pool.min_lifetime = 0.0  # (the loop guard has a test of its own, below)
        assert (await c.get(server.url())).content == b"x"
        assert await trio.to_thread.run_sync(server.wait_until, lambda: server.accepted == 2)
        # The server's idle timeout closes both. One had served the request; the other was
        # opened ahead and never used, so the origin keeps one connection while idle.
        assert server.drop_idle() == 2
        assert await trio.to_thread.run_sync(server.wait_until, lambda: server.accepted == 3)
        assert server.drop_idle() == 1
        assert await trio.to_thread.run_sync(server.wait_until, lambda: server.accepted == 4)
        assert len(server.heads) == 1  # not one request to keep them open
        assert pool.stats.closed_idle == 3
        # A request finds the one kept open, and the origin's two are back beside it.
        assert (await c.get(server.url())).content == b"x"
        assert await trio.to_thread.run_sync(server.wait_until, lambda: server.accepted == 5)
    assert len(server.heads) == 2


async def test_a_server_that_closes_at_once_is_not_reconnected_in_a_loop(serve) -> None:
    server = serve(answer_x)
    async with warm_client(warm=2) as c:
        assert (await c.get(server.url())).content == b"x"
        assert await trio.to_thread.run_sync(server.wait_until, lambda: server.accepted == 2)
        pool = pool_of(c)
        pool.min_lifetime = 60.0  # however slow this machine, they are closed "at once"
        server.drop_idle()
        with trio.fail_after(5):
            while pool.stats.closed_idle < 2:  # the watcher decides (bounded: 5 s)
                await trio.sleep(0.005)
        assert pool.opening == 0 and server.accepted == 2
        # the next request warms the origin again
        assert (await c.get(server.url())).content == b"x"
        assert await trio.to_thread.run_sync(server.wait_until, lambda: server.accepted == 4)


def held_tls(context: ssl.SSLContext, hold: threading.Event) -> ssl.SSLContext:
    """A server context whose handshakes wait for ``hold``: the TCP connection is accepted
    at once, the client's TLS handshake (opening the connection) lasts until it is set."""

    class Held(ssl.SSLContext):
        def wrap_socket(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
            hold.wait(10)
            return context.wrap_socket(*args, **kwargs)

    return Held.__new__(Held, ssl.PROTOCOL_TLS_SERVER)


async def test_a_request_takes_a_connection_being_opened_rather_than_a_new_one(serve, ca) -> None:
    hold = threading.Event()
    server = serve(answer_x, held_tls(server_tls(ca, "127.0.0.1"), hold))
    try:
        async with warm_client(warm=1, trust=trusting(ca)) as c, trio.open_nursery() as nursery:
            transport = c._transport
            assert isinstance(transport, ThreadedTransport)
            pool = pool_of(c)
            pool.ahead_wait = 30.0  # (however slow this machine: it waits, it does not give up)
            transport.warm(server.url("/"))
            assert await trio.to_thread.run_sync(server.wait_until, lambda: server.accepted == 1)
            got: list[bytes] = []

            async def get() -> None:
                got.append((await c.get(server.url())).content)

            nursery.start_soon(get)
            with trio.fail_after(5):
                while pool.waiting < 1:  # the request waits for the one being opened
                    await trio.sleep(0.005)
            assert server.accepted == 1 and pool.opening == 1  # and opened none of its own
            hold.set()
        assert got == [b"x"]
    finally:
        hold.set()
    assert server.accepted == 1 and len(server.heads) == 1


async def test_an_origin_that_refuses_costs_only_its_requests() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed: connections to it are refused
    async with warm_client() as c:
        transport = c._transport
        assert isinstance(transport, ThreadedTransport)
        pool = pool_of(c)
        transport.warm(f"http://127.0.0.1:{port}/")
        with trio.fail_after(5):
            while pool.opening:  # the four openings ahead fail (bounded: 5 s)
                await trio.sleep(0.005)
        for _ in range(3):  # the origin is failing: its requests open no others beside them
            with pytest.raises(httpx.ConnectError):
                await c.get(f"http://127.0.0.1:{port}/x")
            assert pool.opening == 0
        assert pool.stats.opened_ahead == 0 and pool.stats.connects == 0


async def test_closing_ends_the_connections_being_opened_ahead(serve, ca) -> None:
    # The server takes the TCP connection but never answers the TLS handshake: the opening
    # thread would wait for its timeout; closing the transport ends it at once.
    hold = threading.Event()
    server = serve(answer_x, held_tls(server_tls(ca, "127.0.0.1"), hold))
    try:
        c = warm_client(warm=2, trust=trusting(ca))
        transport = c._transport
        assert isinstance(transport, ThreadedTransport)
        pool = pool_of(c)
        transport.warm(server.url("/"))
        assert await trio.to_thread.run_sync(server.wait_until, lambda: server.accepted == 2)
        assert pool.opening == 2
        await c.aclose()
        with trio.fail_after(2):
            while pool.opening:
                await trio.sleep(0.005)
        assert pool.stats.opened_ahead == 0
    finally:
        hold.set()


def test_an_ipv6_origin_is_named_with_brackets() -> None:
    assert transport_module._url(("https", "::1", 8443)) == "https://[::1]:8443"
    assert transport_module._url(("http", "example.org", 80)) == "http://example.org:80"


async def test_send_through_the_threaded_transport_retries_and_decodes(serve) -> None:
    import gzip

    packed = gzip.compress(b"hello " * 100)

    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        if n == 1:
            conn.sendall(response(b"busy", status="503 Service Unavailable"))
        else:
            conn.sendall(response(packed, extra="Content-Encoding: gzip\r\n"))
        return True

    server = serve(reply)
    async with warm_client(warm=0) as c:
        r = await send(c, "GET", server.url(), deadline=trio.current_time() + 10)
    assert r.status_code == 200 and r.content == b"hello " * 100
    assert len(server.heads) == 2


async def test_new_origins_are_reported_once_without_their_paths(serve) -> None:
    server = serve(answer_x)
    seen: list[str] = []
    async with warm_client(warm=0) as c:
        transport = c._transport
        assert isinstance(transport, ThreadedTransport)
        transport.on_new_origin = seen.append
        await c.get(server.url(SECRET_PATH))
        await c.get(server.url("/other"))
    assert seen == [f"http://127.0.0.1:{server.port}"]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_a_new_tls_connection_resumes_the_session(serve, ca, version) -> None:
    tls = server_tls(ca, "127.0.0.1")
    tls.minimum_version = tls.maximum_version = version
    server = serve(answer_x, tls)
    async with warm_client(warm=0, trust=trusting(ca)) as c:
        assert (await c.get(server.url())).content == b"x"
        server.drop_idle()  # the next request needs a new connection: it resumes
        assert (await c.get(server.url())).content == b"x"
        stats = pool_of(c).stats
    assert server.resumed == [False, True]
    assert (stats.tls_handshakes, stats.tls_resumed) == (2, 1)


async def test_tls_connections_opened_ahead_stay_usable_after_their_tickets(serve, ca) -> None:
    # TLS 1.3 sends its session tickets after the handshake: an idle socket opened ahead
    # turns readable with them and must be kept, not taken for one the server closed.
    tls = server_tls(ca, "127.0.0.1")
    tls.minimum_version = ssl.TLSVersion.TLSv1_3
    server = serve(answer_x, tls)
    async with warm_client(warm=3, trust=trusting(ca)) as c:
        transport = c._transport
        assert isinstance(transport, ThreadedTransport)
        transport.warm(server.url("/"))
        assert await trio.to_thread.run_sync(server.wait_until, lambda: len(server.resumed) == 3)
        pool = pool_of(c)
        with trio.fail_after(5):  # no request yet: only the watcher can have read the tickets
            while pool.session(("https", "127.0.0.1", server.port)) is None:
                await trio.sleep(0.005)
        assert pool.stats.closed_idle == 0
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(c.get, server.url())
        assert pool_of(c).stats.closed_idle == 0
    assert server.accepted == 3 and len(server.heads) == 3


# --- a HEAD on an idle connection, on the trio thread (remotefs.loop_exchange) ---------------


@contextlib.contextmanager
def no_worker_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any exchange handed to a worker thread now fails the test."""

    async def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("an exchange went to a worker thread")

    with monkeypatch.context() as patch:
        patch.setattr(Workers, "run", forbidden)
        yield


def head_answer(n: int, head: bytes, conn: socket.socket) -> bool:
    """Every request answered with its number; a HEAD with the length it would have."""
    body = b"answer %d" % n
    if head.startswith(b"HEAD "):
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nX-N: {n}\r\n\r\n".encode())
    else:
        conn.sendall(response(body))
    return True


async def test_a_head_on_an_idle_connection_needs_no_worker_thread(serve, monkeypatch) -> None:
    server = serve(head_answer)
    async with client() as c:
        first = await c.head(server.url(SECRET_PATH))  # no idle connection: a worker thread
        with no_worker_threads(monkeypatch):
            second = await c.head(server.url(SECRET_PATH))
        third = await c.get(server.url())
    assert (first.headers["x-n"], second.headers["x-n"]) == ("1", "2")
    assert second.headers["content-length"] == "8" and second.content == b""
    assert second.http_version == "HTTP/1.1" and second.reason_phrase == "OK"
    assert third.content == b"answer 3"  # the connection is still in step
    assert server.accepted == 1
    assert server.heads[0] == server.heads[1]  # the same request bytes either way


async def test_a_head_on_a_connection_closed_under_it_goes_again_on_a_new_one(serve) -> None:
    # Request 2 (a HEAD on the loop) finds the pooled connection open, and the server closes
    # it on reading the request: sent again, in a worker thread, on a new connection.
    server = serve(hang_up_on_request_2)
    async with client() as c:
        assert (await c.get(server.url())).content == b"1"
        again = await c.head(server.url())
    assert again.status_code == 200 and again.headers["content-length"] == "1"
    assert server.accepted == 2 and len(server.heads) == 3


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (b"SPDY/9 what\r\n\r\n", httpx.RemoteProtocolError, "malformed"),
        (b"HTTP/1.1 200 OK\r\nContent-Len", httpx.RemoteProtocolError, "malformed"),
        (b"", httpx.ReadTimeout, "stopped sending"),
    ],
    ids=["malformed", "cut-short", "silent"],
)
async def test_a_bad_head_answer_on_the_loop_is_httpx_error(serve, answer, error, message) -> None:
    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        if n == 1:
            conn.sendall(response(b"ok"))
            return True
        conn.sendall(answer)
        if not answer:
            server.release.wait(30)
        return False

    server = serve(reply)
    async with client(timeout=0.3) as c:
        await c.get(server.url())
        with pytest.raises(error, match=message) as info:
            await c.head(server.url(SECRET_PATH))
    assert "SIGNATURE" not in str(info.value)
    assert server.accepted == 1  # a byte of an answer came: never sent again


async def test_a_cancelled_head_on_the_loop_closes_its_connection(serve) -> None:
    shut = threading.Event()

    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        if n == 2:  # no answer: returns as soon as the client's side is closed
            conn.settimeout(30)
            with contextlib.suppress(OSError):
                if conn.recv(1) == b"":
                    shut.set()
            return False
        conn.sendall(response(b"%d" % n))
        return True

    server = serve(reply)
    async with client(timeout=30) as c:
        await c.get(server.url())
        with trio.move_on_after(0.2) as scope:
            await c.head(server.url())
        assert scope.cancelled_caught
        assert await trio.to_thread.run_sync(shut.wait, 5)
        assert (await c.get(server.url())).content == b"3"
    assert server.accepted == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray",  # bytes nobody asked for
    ],
    ids=["connection-close", "http-1.0", "stray-bytes"],
)
async def test_a_head_answer_that_ends_its_connection_is_not_reused(serve, answer) -> None:
    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        conn.sendall(answer if head.startswith(b"HEAD ") else response(b"%d" % n))
        return True

    server = serve(reply)
    async with client() as c:
        await c.get(server.url())
        r = await c.head(server.url())
        assert r.headers["content-length"] == "5" and r.content == b""
        assert (await c.get(server.url())).content == b"3"
    assert server.accepted == 2


async def test_informational_answers_before_a_head_answer_are_skipped(serve, monkeypatch) -> None:
    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        return head_answer(n, head, conn)

    server = serve(reply)
    async with client() as c:
        await c.get(server.url())
        with no_worker_threads(monkeypatch):
            r = await c.head(server.url())
        assert (r.status_code, r.headers["x-n"]) == (200, "2")
        assert (await c.get(server.url())).content == b"answer 3"
    assert server.accepted == 1


async def test_heads_over_tls_run_on_the_loop_on_one_connection(serve, ca, monkeypatch) -> None:
    tls = server_tls(ca, "127.0.0.1")
    tls.minimum_version = ssl.TLSVersion.TLSv1_3  # its tickets arrive on the idle connection
    server = serve(head_answer, tls)
    async with client(trust=trusting(ca)) as c:
        await c.get(server.url())
        with no_worker_threads(monkeypatch):
            answers = [(await c.head(server.url())).headers["x-n"] for _ in range(20)]
        assert (await c.get(server.url())).content == b"answer 22"
    assert answers == [str(n) for n in range(2, 22)]
    assert server.accepted == 1


async def test_a_head_on_the_loop_takes_one_of_the_transports_places(serve) -> None:
    # One place: a GET waits for the HEAD on the loop to end, never runs beside it.
    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        if n == 2:
            server.release.wait(30)
        return head_answer(n, head, conn)

    server = serve(reply)
    async with client(slots=1) as c:
        await c.get(server.url())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.head, server.url())
            await trio.to_thread.run_sync(server.wait_until, lambda: len(server.heads) == 2)
            with trio.move_on_after(0.3) as scope:
                await c.get(server.url())
            assert scope.cancelled_caught  # no place for it while the HEAD holds the one
            server.release.set()
        assert (await c.get(server.url())).content == b"answer 3"
    assert server.accepted == 1


async def test_a_tls_session_is_read_per_connection_not_per_exchange(
    serve, ca, monkeypatch
) -> None:
    # Reading a session copies it (~0.3 ms): done after a connection's handshake and its first
    # exchange (or a ticket drained while idle), never after each of its exchanges.
    tls = server_tls(ca, "127.0.0.1")
    tls.minimum_version = ssl.TLSVersion.TLSv1_3
    server = serve(answer_x, tls)
    reads: list[int] = []
    session = ssl.SSLSocket.session
    assert session.fget is not None
    getter = session.fget
    monkeypatch.setattr(
        ssl.SSLSocket, "session", property(lambda s: reads.append(1) or getter(s), session.fset)
    )
    async with warm_client(warm=0, trust=trusting(ca)) as c:
        for _ in range(20):
            assert (await c.get(server.url())).content == b"x"
        server.drop_idle()  # a new connection: it resumes what the first one kept
        for _ in range(20):
            assert (await c.get(server.url())).content == b"x"
    assert server.resumed == [False, True]
    assert len(reads) <= 4  # once per connection (twice if its tickets come late), not per exchange


async def test_a_redirect_to_follow_is_followed_by_httpx(serve) -> None:
    # Below httpx's client a redirect comes back as it is; one to follow goes through the
    # client (sent once more), which follows it.
    def reply(n: int, head: bytes, conn: socket.socket) -> bool:
        if head.startswith(b"GET /file "):
            conn.sendall(
                response(b"", status="307 Temporary Redirect", extra="Location: /moved\r\n")
            )
        else:
            conn.sendall(response(b"moved here"))
        return True

    server = serve(reply)
    async with warm_client(warm=0) as c:
        r = await send(
            c, "GET", server.url(), follow_redirects=True, deadline=trio.current_time() + 10
        )
        assert (r.status_code, r.content) == (200, b"moved here")
        r = await send(c, "GET", server.url("/moved"), deadline=trio.current_time() + 10)
        assert r.content == b"moved here"
    paths = [head.split(b" ")[1] for head in server.heads]
    assert paths == [b"/file", b"/file", b"/moved", b"/moved"]
