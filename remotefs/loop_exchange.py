"""A request without a response body, exchanged on the trio thread over a pooled connection.

Why: the threaded transport (:mod:`remotefs.transport`) runs each exchange in a worker thread
so that bodies are read in C off the trio thread. A ``HEAD`` has no body to read, and its
thread hand-off costs more than the exchange: measured on the 2-core bench machine, 3,000
ODM ``HEAD`` s cost 1.18 ms of the mount's CPU each through a worker thread and 0.87 ms here,
and ``ls -l`` of 3,000 unsized files 1.9 against 1.6 ms per file. So an exchange whose
answer has no body (RFC 9110 9.3.2: a ``HEAD``), on a connection already open and idle, is
written and parsed here, with ``h11`` (httpx's own HTTP/1.1 parser) on the socket made
non-blocking; everything else goes to a worker thread as before.

Invariants:

- **Never blocks the trio thread**: the socket is non-blocking for the whole exchange; every
  wait is ``trio.lowlevel.wait_readable``/``wait_writable`` under the request's read or write
  timeout. A TLS socket is read until it would block before any wait, so bytes OpenSSL has
  already decrypted are never waited for.
- **Errors are httpx's**, as the threaded transport's: ``WriteTimeout``, ``ReadTimeout``,
  ``ReadError``, ``WriteError``, ``RemoteProtocolError``, ``LocalProtocolError``, naming the
  host and port only. A connection that fails before any byte of a response (the server
  closed it while idle) raises :class:`StaleConnection`: the caller sends the request again on
  another connection, as the threaded transport does.
- **Reusable only when clean**: the connection is reported reusable only when both sides are
  done with an HTTP/1.1 exchange that keeps it open and no byte beyond the response arrived.
  On any failure or cancellation the caller closes it; the socket's timeout is restored
  before it is reported reusable.
"""

from __future__ import annotations

import socket
import ssl

import h11
import httpx
import trio

Answer = tuple[bytes, int, str, list[tuple[bytes, bytes]], bytes]
"""(HTTP version, status, reason, raw headers, body): what an exchange returns."""

RECEIVE_BYTES = 65536


class StaleConnection(Exception):
    """A pooled connection failed before any byte of a response: the server had closed it."""


async def exchange_on_loop(
    sock: socket.socket,
    method: str,
    target: str,
    headers: list[tuple[bytes, bytes]],
    where: str,
    *,
    write_timeout: float | None,
    read_timeout: float | None,
) -> tuple[Answer, bool]:
    """Send a bodiless request on the open ``sock``, read its bodiless answer: (answer,
    whether the connection may be used again). ``where`` (``host:port``) names the server in
    errors. The caller owns ``sock``: it closes it unless told it may be reused."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    protocol = h11.Connection(h11.CLIENT)
    try:
        request = protocol.send(h11.Request(method=method, target=target, headers=headers))
        request += protocol.send(h11.EndOfMessage())
    except h11.LocalProtocolError:  # a method, target or header h11 refuses; never shown
        raise httpx.LocalProtocolError(
            f"a request to {where} has an invalid method, target or header"
        ) from None
    await _send_all(sock, request, where, write_timeout)
    answer = await _receive(sock, protocol, where, read_timeout)
    reusable = (
        protocol.our_state is h11.DONE
        and protocol.their_state is h11.DONE
        and answer[0] == b"HTTP/1.1"
        and not protocol.trailing_data[0]
    )
    if reusable:
        sock.settimeout(timeout)
    return answer, reusable


async def _send_all(sock: socket.socket, data: bytes, where: str, timeout: float | None) -> None:
    view = memoryview(data)
    with trio.move_on_after(_seconds(timeout)) as scope:
        while view:
            try:
                view = view[sock.send(view) :]
            except (BlockingIOError, ssl.SSLWantWriteError):
                await trio.lowlevel.wait_writable(sock)
            except ssl.SSLWantReadError:
                await trio.lowlevel.wait_readable(sock)
            except OSError:  # nothing of the answer read yet: the server closed it idle
                raise StaleConnection from None
    if scope.cancelled_caught:
        raise httpx.WriteTimeout(f"sending to {where} timed out")


async def _receive(
    sock: socket.socket, protocol: h11.Connection, where: str, timeout: float | None
) -> Answer:
    response: h11.Response | None = None
    received = False
    while True:
        try:
            event = protocol.next_event()
        except h11.RemoteProtocolError:
            raise httpx.RemoteProtocolError(f"{where} sent a malformed response") from None
        if event is h11.NEED_DATA:
            chunk = await _chunk(sock, where, timeout, received)
            if not chunk and not received:
                raise StaleConnection
            received = True
            protocol.receive_data(chunk)
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None  # h11 ends no message it did not start
            return (
                b"HTTP/" + response.http_version,
                response.status_code,
                response.reason.decode("latin-1"),
                list(response.headers),
                b"",
            )
        elif isinstance(event, h11.ConnectionClosed):
            raise httpx.RemoteProtocolError(f"{where} closed the connection without a response")
        # InformationalResponse (1xx before the final answer), Data (none for a HEAD): skipped


async def _chunk(sock: socket.socket, where: str, timeout: float | None, received: bool) -> bytes:
    """The next bytes from ``sock`` (``b""`` at its end), waiting at most ``timeout``."""
    with trio.move_on_after(_seconds(timeout)) as scope:
        while True:
            try:
                return sock.recv(RECEIVE_BYTES)
            except (BlockingIOError, ssl.SSLWantReadError):
                await trio.lowlevel.wait_readable(sock)
            except ssl.SSLWantWriteError:
                await trio.lowlevel.wait_writable(sock)
            except OSError as exc:
                if not received:
                    raise StaleConnection from None
                raise httpx.ReadError(
                    f"reading the response from {where} failed: "
                    f"{exc.strerror or type(exc).__name__}"
                ) from None
    assert scope.cancelled_caught
    raise httpx.ReadTimeout(f"{where} stopped sending the response")


def _seconds(timeout: float | None) -> float:
    return float("inf") if timeout is None else timeout
