"""A latency front: a TCP proxy on loopback that models a network link with a round-trip time.

The emulator's ``latency_ms`` knob delays each response, but on loopback a TCP connect or a
TLS handshake costs nothing, so a client's connection set-up is invisible to it. A front sits
between a client and the emulator and charges what a real link charges:

- **Delay, both ways**: every chunk read from one side is delivered to the other
  ``rtt / 2`` after it arrived (order kept; pipelined: a chunk in flight never holds up the
  reading of the next; no bandwidth limit beyond a window of ``IN_FLIGHT_CHUNKS`` chunks,
  16 MiB, in flight per direction and connection: 800 MB/s at 40 ms, far above what these
  workloads move, yet an unranged GET that its client drops after a few KB (htslib opens a
  URL so) does not have the front read and encrypt 100s of MB it will throw away).
- **TCP handshake**: on loopback ``connect()`` returns at once; a real one blocks the client
  for one round trip. So a new connection's first client bytes are delivered no earlier than
  ``accept + rtt + rtt / 2``: a request on a fresh connection costs 2 RTT, on a reused one 1.
- **TLS** (optional): the front is the TLS server (a certificate from a throwaway CA for
  ``127.0.0.1`` and ``localhost``, :class:`ThrowawayCA`), and the handshake's flights cross
  the delayed link like any bytes (``trio.SSLStream`` over :class:`_Link`), so a full TLS 1.2
  handshake adds 2 RTT, TLS 1.3 or a resumed TLS 1.2 handshake 1 RTT. The version is pinned;
  session tickets and resumption are left as OpenSSL has them by default. Plaintext goes to
  the emulator, which the front reaches over loopback with no delay.
- **RTT at run time**: :attr:`Front.rtt` may be changed at any time; a chunk takes the delay
  in force when it arrived, a connection the handshake delay in force when it was accepted.
- **Counters** (:meth:`Front.counts`, :meth:`Front.reset`, :meth:`Front.wait` for a
  condition on them): connections accepted and ended, TLS handshakes completed (and of those
  resumed, ``session_reused``) or failed, bytes each way on the client's side of the link
  (ciphertext under TLS; a byte counts down as it is handed to the client's socket).

Why a thread of the bench process, not a subprocess: the bench process mostly waits on its
children (samtools, the mount), with the GIL released; the workloads through a front move a
few MB, so the front's trio loop is idle nearly all the time, and its counters and RTT are
then plain attributes behind a lock rather than a control protocol. The listening socket is
bound and listening before the thread starts, so a client may connect as soon as
:meth:`Front.start` returns.

Invariants: every wait is bounded (the upstream connect, the TLS handshake, the delivery of
what is queued when a side closes); when either side closes or breaks, the connection ends
on both, after what was already sent on the client's link has been delivered; the thread
ends on :meth:`Front.stop`.
"""

from __future__ import annotations

import math
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from pathlib import Path

import trio
import trustme

HOST = "127.0.0.1"
CHUNK = 65536
IN_FLIGHT_CHUNKS = 256
"""Chunks queued per direction and connection before the reading side waits (the window)."""
CONNECT_TIMEOUT = 10.0
"""Seconds to reach the upstream (loopback)."""
HANDSHAKE_TIMEOUT = 60.0
"""Seconds for a client to complete its TLS handshake."""
CLOSE_TIMEOUT = 10.0
"""Seconds to deliver what is queued when a connection ends."""
THREAD_TIMEOUT = 10.0
"""Seconds for the front's thread to start or to end."""

TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class FrontCounts:
    """What a front saw between a reset and now."""

    connections: int = 0
    closed: int = 0
    """Connections ended (both sides closed)."""
    tls_handshakes: int = 0
    """Completed, resumed ones included."""
    tls_resumed: int = 0
    tls_failed: int = 0
    bytes_up: int = 0
    """Client to server, as on the link (ciphertext under TLS)."""
    bytes_down: int = 0


class ThrowawayCA:
    """A CA made for one session (trustme): server contexts for a front, and a PEM file that
    a client names in ``SSL_CERT_FILE`` (httpx, Python's ssl) or ``CURL_CA_BUNDLE`` (htslib's
    libcurl) to trust it."""

    def __init__(self, directory: Path) -> None:
        self._ca = trustme.CA()
        self._cert = self._ca.issue_cert(HOST, "localhost")
        # A file of its own: two groups' CAs in one session must not overwrite each other's.
        fd, name = tempfile.mkstemp(prefix="throwaway-ca-", suffix=".pem", dir=directory)
        os.close(fd)
        self.pem = Path(name)
        self._ca.cert_pem.write_to_path(name)

    def server_context(self, version: str) -> ssl.SSLContext:
        """A TLS server context for ``127.0.0.1``/``localhost``, pinned to ``version``."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(context)
        context.minimum_version = context.maximum_version = TLS_VERSIONS[version]
        return context

    def trust(self, context: ssl.SSLContext) -> None:
        self._ca.configure_trust(context)


class _Counters:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._values = FrontCounts()

    def add(self, **deltas: int) -> None:
        with self._changed:
            now = self._values
            self._values = FrontCounts(
                **{f.name: getattr(now, f.name) + deltas.get(f.name, 0) for f in fields(now)}
            )
            self._changed.notify_all()

    def get(self) -> FrontCounts:
        with self._changed:
            return self._values

    def reset(self) -> None:
        with self._changed:
            self._values = FrontCounts()

    def wait(self, until: Callable[[FrontCounts], bool], timeout: float) -> FrontCounts:
        with self._changed:
            self._changed.wait_for(lambda: until(self._values), timeout)
            return self._values


class _Link(trio.abc.Stream):
    """The client's side of a connection, as the server sees it across the link: bytes the
    client sent come out of :meth:`receive_some` half a round trip after they arrived (and
    not before ``floor``, the end of the TCP handshake); bytes given to :meth:`send_all`
    reach the client half a round trip later; :meth:`aclose` closes the client's socket once
    everything sent before it was delivered. :meth:`pump_in` and :meth:`pump_out` move the
    bytes, in the connection's nursery."""

    def __init__(self, raw: trio.SocketStream, front: Front, floor: float) -> None:
        self.raw = raw
        self.front = front
        self.floor = floor
        self._in_send, self._in_recv = trio.open_memory_channel[tuple[float, bytes]](
            IN_FLIGHT_CHUNKS
        )
        self._out_send, self._out_recv = trio.open_memory_channel[tuple[float, bytes | None]](
            IN_FLIGHT_CHUNKS
        )
        self._pending = b""
        self._eof = False
        self._closing = False
        self.delivered = trio.Event()
        """Set once the client's socket is closed, everything before the close delivered."""

    async def pump_in(self) -> None:
        async with self._in_send:
            while True:
                try:
                    data = await self.raw.receive_some(CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                at = max(trio.current_time() + self.front.rtt / 2, self.floor)
                self.front.counters.add(bytes_up=len(data))
                await self._in_send.send((at, data))
                if not data:
                    return

    async def pump_out(self) -> None:
        try:
            async for at, data in self._out_recv:
                await trio.sleep_until(at)
                if data is None:
                    break
                self.front.counters.add(bytes_down=len(data))  # before the client can see them
                try:
                    await self.raw.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
        finally:
            self._out_recv.close()  # a sender now gets BrokenResourceError, never waits
            with trio.CancelScope(shield=True):
                await self.raw.aclose()
            self.delivered.set()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self._pending:
            if self._eof:
                await trio.lowlevel.checkpoint()
                return b""
            try:
                at, data = await self._in_recv.receive()
            except trio.EndOfChannel:
                data = b""
            else:
                await trio.sleep_until(at)
            if not data:
                self._eof = True
                return b""
            self._pending = data
        else:
            await trio.lowlevel.checkpoint()
        n = len(self._pending) if max_bytes is None else max_bytes
        out, self._pending = self._pending[:n], self._pending[n:]
        return out

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            raise trio.ClosedResourceError("the link is closed")
        try:
            await self._out_send.send((trio.current_time() + self.front.rtt / 2, bytes(data)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise trio.BrokenResourceError("the client is gone") from None

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """The close follows the bytes already sent (it travels the link too)."""
        if not self._closing:
            self._closing = True
            # Full: ``pump_out`` ends when the channel closes, after the last chunk.
            with suppress(trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._out_send.send_nowait((trio.current_time() + self.front.rtt / 2, None))
            self._out_send.close()
        await trio.lowlevel.checkpoint()


async def _splice(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
    """Copy both ways until either side ends or breaks; then both stop."""
    async with trio.open_nursery() as nursery:

        async def copy(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
            try:
                while data := await src.receive_some(CHUNK):
                    await dst.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(copy, a, b)
        nursery.start_soon(copy, b, a)


class Front:
    """One latency front: listens on ``127.0.0.1:port``, forwards to ``upstream``."""

    def __init__(self, upstream: tuple[str, int], tls: ssl.SSLContext | None = None) -> None:
        self.upstream = upstream
        self.tls = tls
        self.counters = _Counters()
        self._rtt = 0.0
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name=f"front-{self.port}", daemon=True)
        self._started = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}"

    @property
    def rtt(self) -> float:
        """The link's round-trip time, in seconds."""
        return self._rtt

    @rtt.setter
    def rtt(self, seconds: float) -> None:
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"an RTT is a finite number of seconds >= 0, not {seconds!r}")
        self._rtt = float(seconds)

    def counts(self) -> FrontCounts:
        return self.counters.get()

    def reset(self) -> None:
        self.counters.reset()

    def wait(self, until: Callable[[FrontCounts], bool], timeout: float) -> FrontCounts:
        """The counts once ``until`` holds for them, or after ``timeout`` seconds."""
        return self.counters.wait(until, timeout)

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(THREAD_TIMEOUT) or self.error is not None:
            raise RuntimeError(f"the front on port {self.port} did not start: {self.error!r}")

    def stop(self) -> None:
        token, scope = self._token, self._scope
        if token is not None and scope is not None:
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(scope.cancel)
        self._thread.join(THREAD_TIMEOUT)
        self._listener.close()
        if self._thread.is_alive():
            raise RuntimeError(f"the front on port {self.port} did not stop")

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by whoever reads ``error``; never silent
            self.error = exc
        finally:
            self._started.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self._listener))
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                self._started.set()
                await trio.serve_listeners(self._serve, [listener])
        finally:
            await listener.aclose()

    async def _serve(self, raw: trio.SocketStream) -> None:
        accepted, rtt = trio.current_time(), self.rtt
        self.counters.add(connections=1)
        link = _Link(raw, self, floor=accepted + rtt + rtt / 2)
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                upstream = await trio.open_tcp_stream(*self.upstream)
        except (OSError, trio.TooSlowError):
            await raw.aclose()
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.pump_in)
            nursery.start_soon(link.pump_out)
            try:
                client = await self._handshake(link)
                if client is not None:
                    await _splice(client, upstream)
            finally:
                with trio.CancelScope(shield=True):
                    await upstream.aclose()
                    await link.aclose()
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await link.delivered.wait()
                nursery.cancel_scope.cancel()
        self.counters.add(closed=1)

    async def _handshake(self, link: _Link) -> trio.abc.Stream | None:
        """The client's stream: the link itself, or TLS over it once the handshake is done."""
        if self.tls is None:
            return link
        # https_compatible: HTTP clients close without close_notify, and so does the front.
        stream = trio.SSLStream(link, self.tls, server_side=True, https_compatible=True)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await stream.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError):
            self.counters.add(tls_failed=1)
            return None
        self.counters.add(tls_handshakes=1, tls_resumed=int(bool(stream.session_reused)))
        return stream


@contextmanager
def running_front(upstream: tuple[str, int], tls: ssl.SSLContext | None = None) -> Iterator[Front]:
    """A started :class:`Front`, stopped on the way out."""
    front = Front(upstream, tls)
    front.start()
    try:
        yield front
    finally:
        front.stop()
