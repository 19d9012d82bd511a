"""The mount's HTTP transport: HTTP/1.1 exchanges in worker threads, bodies read whole.

Why not httpx's own transport: it receives a body on the trio thread, one Python-level
event per socket read through httpcore and h11, on the thread that also answers FUSE. Here
the stdlib's ``http.client`` runs each exchange in a worker thread and reads the body with
one ``read`` of its declared length, into a ``bytes`` object allocated once: the socket
reads (and TLS decryption) run in C with the GIL released, off the trio thread. Measured on
the 2-core bench machine: one GET of 1 GiB from the emulator costs ~1.8 s of CPU through
httpx, ~0.3 s as socket reads into one buffer; in the mount, a cold 1 GiB read cost the trio
thread 1.2-1.3 s of CPU instead of 2.5-3.0 s.

Everything above the wire stays httpx's: :class:`ThreadedTransport` is an
``httpx.AsyncBaseTransport``, so request building, headers, redirects (never followed, see
:mod:`remotefs.http.client`) and TLS verification (the context comes from
``httpx.create_ssl_context``, as httpx would build it) are unchanged, and
:func:`remotefs.http.send.send` retries exactly as before. Proxies are not spoken here: with a
transport of its own httpx ignores the proxy environment, so ``make_client`` keeps httpx's
transport when a proxy is configured.

Invariants:

- **Whole responses**: a response is returned only with its whole body; a body shorter than
  its ``Content-Length`` (or a chunked body cut short) raises ``httpx.RemoteProtocolError``,
  never returns short.
- **Errors are httpx's**: every failure leaves as the ``httpx`` exception httpx's own
  transport would raise (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``, ``ReadError``,
  ``WriteError``, ``RemoteProtocolError``), so :mod:`remotefs.http.send` classifies it unchanged.
  Messages name the host and port at most: never a path, query or header.
- **Bounded**: every socket operation has the request's timeout; a cancelled exchange (the
  operation's deadline, or read-ahead given up) shuts its socket down, whether it is
  connecting, in the TLS handshake or receiving, so the abandoned thread ends at once and its
  connection is never pooled. Only a name lookup (``getaddrinfo``) cannot be ended: that
  thread ends with it. At most ``max_connections`` exchanges run at once, in as many threads
  at most, kept for the mount's life (:mod:`remotefs.workers`: no thread is started on the
  trio thread after the first ``max_connections``).
- **Limits**: HTTP/1.1 only (HTTP/1.0 answers are read, never pooled); informational (1xx)
  answers before the final one are skipped; at most 100 header lines per response
  (``http.client``'s limit; storage services send ~20). A body is read in pieces of at most
  ``WHOLE_BODY_BYTES`` (one piece for every ranged read), so a wrong ``Content-Length``
  never allocates much more than the bytes that actually arrive.
- **Pooling** (:mod:`remotefs.pool`): a connection goes back to its origin's idle list only
  after a complete response that does not close it. One that the server closed while idle is
  noticed (its socket is readable) and dropped before use; a reused connection that fails
  before any response byte is retried once on a new connection (GET/HEAD only). With
  ``warm``, the pool also opens connections ahead of requests, re-opens those the servers
  close while idle (never by sending a request), and resumes TLS sessions.
- **A HEAD on an idle connection runs on the trio thread** (:mod:`remotefs.loop_exchange`):
  it has no body to read off the trio thread, and the thread hand-off cost more than the
  exchange. It holds one of the ``max_connections`` places like any other; without an idle
  connection, or on one the server had closed, it goes to a worker thread.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx

from remotefs.loop_exchange import Answer, StaleConnection, exchange_on_loop
from remotefs.pool import ConnectionPool
from remotefs.pool import Origin as _Origin
from remotefs.workers import Workers

WHOLE_BODY_BYTES = 64 << 20
"""Bodies up to this declared length are read in one piece (read-ahead requests are 4 MiB);
longer ones in pieces of this size."""
PRESTARTED_THREADS = 8
"""Worker threads a mount starts with: a cold region query's requests at once (head, index
and tail, two ``download_info``) with room to spare; more are started as needed."""
_FOLDED = re.compile(r"\r?\n[ \t]+")


class ThreadedTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        *,
        max_connections: int = 32,
        ssl_context: ssl.SSLContext | None = None,
        warm: int = 0,
        connect_timeout: float = 15.0,
    ) -> None:
        """``ssl_context``: the certificates to trust (default: httpx's, from ``certifi`` or
        ``SSL_CERT_FILE``/``SSL_CERT_DIR``); tests pass one trusting their own CA. ``warm``:
        connections kept open per origin in use (:mod:`remotefs.pool`; 0: none opened ahead
        of a request)."""
        self._ssl_context = ssl_context or httpx.create_ssl_context()
        self._workers = Workers(max_connections)
        if warm:  # a mount: its first requests find their threads started
            self._workers.prestart(PRESTARTED_THREADS)
        self._connect_timeout = connect_timeout
        self.pool = ConnectionPool(self._ahead, warm=warm, on_new_origin=self._new_origin)
        self.on_new_origin: Callable[[str], None] | None = None
        """Called with ``scheme://host:port`` the first time an origin answers a request
        (the mount remembers storage hosts with it, :mod:`remotefs.origins`)."""

    def warm(self, url: str) -> None:
        """Open connections to ``url``'s origin now and keep them open (see :mod:`remotefs.pool`);
        a URL that is not http(s) is ignored."""
        parsed = httpx.URL(url)
        if parsed.scheme in ("http", "https") and parsed.host:
            self.pool.warm(_origin(parsed))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        version, status, reason, headers, content = await self.exchange(request)
        return httpx.Response(
            status,
            headers=headers,
            stream=_HandedOver(content),
            extensions={"http_version": version, "reason_phrase": reason.encode("latin-1")},
        )

    async def exchange(self, request: httpx.Request) -> Answer:
        """One exchange, below httpx's models: (HTTP version, status, reason, raw headers,
        whole body). :func:`remotefs.http.send.send` calls this directly (no client-side
        cookies, auth or redirects to run): 15-20% less of the mount's CPU per request when
        it sizes a folder of thousands of ODM files."""
        if request.url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {request.url.scheme!r}")
        body = await request.aread()
        exchange = _Exchange(self, request, body)
        if exchange.method == "HEAD" and not body:
            answer = await self._on_loop(exchange)
            if answer is not None:
                return answer
        try:
            self.pool.using(exchange.origin)
            # A cancel while it runs aborts it (Workers.run calls exchange.abort); one while
            # it waits for a place leaves it never started.
            answer = await self._workers.run(exchange.run, exchange.abort)
        finally:
            self.pool.done(exchange.origin)
        self.pool.answered(exchange.origin)
        return answer

    async def _on_loop(self, exchange: _Exchange) -> Answer | None:
        """A ``HEAD`` on an idle pooled connection, on the trio thread
        (:mod:`remotefs.loop_exchange`: no thread hand-off). ``None``: there was no idle
        connection, or the server had closed it: the exchange goes to a worker thread, which
        opens a new one."""
        async with self._workers.limiter:
            self.pool.using(exchange.origin)
            try:
                conn = self.pool.take_idle(exchange.origin)
                if conn is None:
                    return None
                assert conn.sock is not None  # the pool keeps open connections only
                reusable = False
                try:
                    answer, reusable = await exchange_on_loop(
                        conn.sock,
                        exchange.method,
                        exchange.target,
                        exchange.headers,
                        exchange.where,
                        write_timeout=exchange.write_timeout,
                        read_timeout=exchange.read_timeout,
                    )
                except StaleConnection:
                    return None
                finally:
                    if reusable:
                        self.pool.give_back(exchange.origin, conn)
                    else:
                        conn.close()
            finally:
                self.pool.done(exchange.origin)
        self.pool.answered(exchange.origin)
        return answer

    async def aclose(self) -> None:
        self.pool.close()
        self._workers.close()

    def _new_origin(self, origin: _Origin) -> None:
        if self.on_new_origin is not None:
            self.on_new_origin(_url(origin))

    # --- connections (called from worker threads) ---------------------------------------------

    def _ahead(
        self, origin: _Origin, attach: Callable[[socket.socket], None]
    ) -> http.client.HTTPConnection:
        """An unconnected connection for the pool to open ahead of any request."""
        return self._new_connection(origin, self._connect_timeout, attach)

    def _new_connection(
        self, origin: _Origin, timeout: float | None, attach: Callable[[socket.socket], None]
    ) -> http.client.HTTPConnection:
        scheme, host, port = origin
        conn: _Connection
        if scheme == "https":
            conn = _TLSConnection(host, port, timeout, attach, self._ssl_context, self.pool, origin)
        else:
            conn = _Connection(host, port, timeout, attach, self.pool)
        conn.response_class = _FinalResponse
        return conn


def _origin(url: httpx.URL) -> _Origin:
    port = url.port or (443 if url.scheme == "https" else 80)
    return (url.scheme, url.raw_host.decode("ascii"), port)  # IDNA-encoded, as in Host


def _url(origin: _Origin) -> str:
    scheme, host, port = origin
    shown = f"[{host}]" if ":" in host else host  # an IPv6 literal
    return f"{scheme}://{shown}:{port}"


def _no_exchange(sock: socket.socket) -> None:
    """What a connection attaches its socket to once it is connected: nothing."""


class _Connection(http.client.HTTPConnection):
    """An ``HTTPConnection`` whose socket is handed to ``attach`` before it connects, so that
    a cancel can shut down a connect that hangs (a host that drops SYNs) instead of leaving
    its thread there until the connect timeout. Only name resolution cannot be ended.

    ``attach`` raises once the exchange is cancelled. A cancel that lands between the attach
    and the ``connect`` call finds a socket not yet connecting, which ``shutdown`` cannot end;
    with a timeout (the mount always has one) that connect then returns at once, and the
    attach after it raises. ``attach`` is dropped when ``connect`` returns: a pooled
    connection must not keep its first exchange (its request and URL) alive."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float | None,
        attach: Callable[[socket.socket], None],
        pool: ConnectionPool,
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self._attach = attach
        self._pool = pool
        self.opened = 0.0
        """``time.monotonic()`` when it connected."""

    def connect(self) -> None:
        sys.audit("http.client.connect", self, self.host, self.port)
        try:
            self.sock = self._connected_socket()
            self._pool.connected()
            self._attach(self.sock)  # a cancel just before the connect did not end it
            self._handshake()
            self.opened = time.monotonic()
        finally:
            self._attach = _no_exchange

    def _connected_socket(self) -> socket.socket:
        """``socket.create_connection``: each address in turn, each socket attached first."""
        failure: OSError | None = None
        for family, kind, proto, _, address in socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM
        ):
            sock = socket.socket(family, kind, proto)
            try:
                sock = self._wrap(sock)
                self._attach(sock)  # raises once the exchange is cancelled: no more tries
                sock.settimeout(self.timeout)
                sock.connect(address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:
                sock.close()
                failure = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise failure or OSError(f"no address for {self.host}")

    def _wrap(self, sock: socket.socket) -> socket.socket:
        return sock

    def _handshake(self) -> None:
        pass


class _TLSConnection(_Connection):
    """The same over TLS: the socket is wrapped before it connects (nothing on the wire can
    then make the wrap fail and leave its socket open), and the handshake runs attached."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float | None,
        attach: Callable[[socket.socket], None],
        context: ssl.SSLContext,
        pool: ConnectionPool,
        origin: _Origin,
    ) -> None:
        super().__init__(host, port, timeout, attach, pool)
        self._tls = context
        self._origin = origin

    def _wrap(self, sock: socket.socket) -> socket.socket:
        session = self._pool.session(self._origin)  # resumed if the server still has it
        if session is not None:
            try:
                return self._tls.wrap_socket(
                    sock,
                    server_hostname=self.host,
                    do_handshake_on_connect=False,
                    session=session,
                )
            except (ValueError, ssl.SSLError):  # a session OpenSSL will not take: without
                self._pool.forget_session(self._origin)
        return self._tls.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)

    def _handshake(self) -> None:
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self.sock.do_handshake()
        except (ssl.SSLError, ValueError):
            self._pool.forget_session(self._origin)  # never offered again if it was to blame
            raise
        self._pool.handshaken(self._origin, self.sock)


class _HandedOver(httpx.AsyncByteStream):
    """A body read whole, handed to its one reader and then forgotten.

    httpx's ``Client.send`` ties each response into a reference cycle (the response's stream
    points back to the response), which only the cyclic garbage collector frees, and it runs
    rarely when few objects are made: a stream that kept its body pinned ~20 read-ahead
    bodies (88 MiB of a 1 GiB stream) long after they were read. This one lets go of it."""

    def __init__(self, content: bytes) -> None:
        self._content: bytes | None = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content, self._content = self._content, None
        if content:
            yield content

    async def aclose(self) -> None:
        self._content = None


class _Exchange:
    """One request and its whole response, run by :meth:`run` in a worker thread."""

    def __init__(self, transport: ThreadedTransport, request: httpx.Request, body: bytes) -> None:
        self.transport = transport
        self.method = request.method
        url = request.url
        self.origin: _Origin = _origin(url)
        self.where = f"{self.origin[1]}:{self.origin[2]}"
        self.target = url.raw_path.decode("ascii")
        self.headers = request.headers.raw
        self.body = body
        timeouts = request.extensions.get("timeout", {})
        self.connect_timeout = timeouts.get("connect")
        self.write_timeout = timeouts.get("write")
        self.read_timeout = timeouts.get("read")
        self._lock = threading.Lock()
        self._aborted = False
        self._sock: socket.socket | None = None

    def abort(self) -> None:
        """From the trio thread: end the exchange now (the thread's next read fails)."""
        with self._lock:
            self._aborted = True
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed: nothing to end
                # the plain socket's shutdown, also for TLS: SSLSocket's own would drop the
                # TLS state under a handshake still running in the thread
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def run(self) -> Answer:
        conn = self.transport.pool.take(self.origin, lambda: self._aborted)
        if conn is not None:
            try:
                return self._on(conn, reused=True)
            except StaleConnection:  # the server closed it before answering
                pass  # (or we did, on a cancel): once more, on a new one
        self._raise_if_aborted()  # (no name lookup for an exchange given up)
        return self._on(
            self.transport._new_connection(self.origin, self.connect_timeout, self._attach)
        )

    def _on(self, conn: http.client.HTTPConnection, *, reused: bool = False) -> Answer:
        keep = False
        try:
            if conn.sock is None:
                self._connect(conn)  # attaches each socket it makes
            else:
                self._attach(conn.sock)  # a pooled connection
            conn.sock.settimeout(self.write_timeout)
            self._send(conn, reused)
            conn.sock.settimeout(self.read_timeout)
            response = self._response(conn, reused)
            content = self._body(response)
            keep = not response.will_close and response.version == 11
            headers = [
                (name.encode("latin-1"), _FOLDED.sub(" ", value).strip(" \t").encode("latin-1"))
                for name, value in response.getheaders()
            ]
            version = b"HTTP/1.1" if response.version == 11 else b"HTTP/1.0"
            return version, response.status, response.reason, headers, content
        finally:
            with self._lock:
                self._sock = None
                keep = keep and not self._aborted
            if keep:
                self.transport.pool.give_back(self.origin, conn)
            else:
                conn.close()

    def _attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._raise_if_aborted()
            self._sock = sock

    def _raise_if_aborted(self) -> None:
        if self._aborted:
            raise httpx.ReadError(f"{self.where}: cancelled")

    def _connect(self, conn: http.client.HTTPConnection) -> None:
        try:
            conn.connect()
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {self.where} timed out") from None
        except ssl.SSLError as exc:
            raise httpx.ConnectError(
                f"TLS with {self.where} failed: {exc.reason or type(exc).__name__}"
            ) from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {self.where}: {_os_error(exc)}") from None
        except UnicodeError:  # a label the IDNA codec refuses (over 63 characters): no lookup
            raise httpx.LocalProtocolError(f"the host name {self.where} is invalid") from None

    def _send(self, conn: http.client.HTTPConnection, reused: bool) -> None:
        try:
            conn.putrequest(self.method, self.target, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers:
                conn.putheader(name, value)
            conn.endheaders(self.body or None)
        except TimeoutError:
            raise httpx.WriteTimeout(f"sending to {self.where} timed out") from None
        except ValueError:  # http.client refuses a method, target or header; never shown
            raise httpx.LocalProtocolError(
                f"a request to {self.where} has an invalid method, target or header"
            ) from None
        except OSError as exc:
            if reused and self._replayable:
                raise StaleConnection from None
            raise httpx.WriteError(f"sending to {self.where} failed: {_os_error(exc)}") from None

    def _response(self, conn: http.client.HTTPConnection, reused: bool) -> http.client.HTTPResponse:
        with self._receiving("response"):
            try:
                return conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if reused and self._replayable:
                    raise StaleConnection from None
                raise httpx.RemoteProtocolError(
                    f"{self.where} closed the connection without a response"
                ) from None

    @property
    def _replayable(self) -> bool:
        return self.method in ("GET", "HEAD")

    def _body(self, response: http.client.HTTPResponse) -> bytes:
        with self._receiving("body"):
            length = response.length  # 0 for HEAD, 204 and 304 (http.client knows they are empty)
            if not length:  # chunked, delimited by the connection's end, or empty
                return response.read()
            # One allocation, filled in place: BufferedReader.read(n) creates the bytes object
            # and reads the socket into it until n bytes or the end (no copy, no zeroing).
            pieces = []
            got = 0
            while got < length and (piece := response.read(min(length - got, WHOLE_BODY_BYTES))):
                pieces.append(piece)
                got += len(piece)
            body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if got < length:
                raise httpx.RemoteProtocolError(
                    f"{self.where} closed the connection {got} bytes into a body of {length}"
                )
            return body

    @contextlib.contextmanager
    def _receiving(self, what: str) -> Iterator[None]:
        """Failures while receiving the response or its body, as httpx's exceptions."""
        try:
            yield
        except TimeoutError:
            raise httpx.ReadTimeout(f"{self.where} stopped sending the {what}") from None
        except http.client.IncompleteRead as exc:
            raise httpx.RemoteProtocolError(
                f"{self.where} closed the connection {len(exc.partial)} bytes into the {what}"
            ) from None
        except http.client.HTTPException as exc:
            raise httpx.RemoteProtocolError(
                f"{self.where} sent a malformed {what} ({type(exc).__name__})"
            ) from None
        except OSError as exc:
            raise httpx.ReadError(
                f"reading the {what} from {self.where} failed: {_os_error(exc)}"
            ) from None


class _FinalResponse(http.client.HTTPResponse):
    """``http.client`` skips ``100 Continue`` only: this skips every informational answer
    (``103 Early Hints``, ...), which would otherwise be taken for the final one and leave
    that one unread on a pooled connection."""

    def _read_status(self) -> tuple[str, int, str]:
        while True:
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if status >= 200 or status == 101:  # 101 is final (never asked for: an error)
                return version, status, reason
            http.client._read_headers(self.fp)  # type: ignore[attr-defined]


def _os_error(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
