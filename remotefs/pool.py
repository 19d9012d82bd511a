"""The transport's connections: idle lists per origin, kept warm, with TLS sessions to resume.

A new connection costs round trips before its first request can leave: one for TCP, one
(TLS 1.3) or two (TLS 1.2) more for the handshake. A cold region query at 40 ms spends more
of its time there than in requests. So the pool opens connections *before* they are needed:

- **Warm origins.** An origin is warm from its first request (or from :meth:`warm`: the API
  at mount time, the storage hosts the last mount used) until ``WARM_FOR_SECONDS`` after its
  last request. For a warm origin the pool keeps at least ``warm`` connections existing (idle,
  in use or being opened): when a request is the origin's first, the others are opened in
  parallel with it, so that the requests that follow it (index and tail beside a BAM's head;
  two ``download_info``) find one open.
- **Waiting for one being opened.** A request that finds no idle connection while one is
  being opened for nobody in particular waits for it (it was started earlier than a new one
  would be) — one waiter per connection being opened; the others open their own at once.
- **Re-opened without a request.** One thread watches every idle socket (``epoll``, one-shot:
  it wakes only when a socket turns readable, never on a timer). A socket that turns readable
  while idle was closed by the server (its idle timeout) or sent something nobody asked for:
  it is closed, and for a warm origin a new connection is opened in its place — a TCP connect
  and a TLS handshake, never an HTTP request: keeping warm spends no API budget. A socket
  readable only because TLS 1.3 sent its session tickets after the handshake is drained and
  kept. A connection the server closed within ``MIN_LIFETIME`` of being opened is not
  replaced (a server that closes at once must not make the pool reconnect in a loop); the
  next request warms the origin again.
- **TLS resumption.** The newest resumable session of each origin is kept (after the
  handshake for TLS 1.2, after the first read for TLS 1.3, whose tickets arrive then) and
  offered by every new connection to that origin: a resumed handshake skips the certificate
  exchange and, with TLS 1.2, one round trip.

Invariants: a connection is in at most one place — an idle list (and then watched), an
exchange, or a thread opening it; every count here is changed under ``_lock``; a
connection that fails to open costs only itself (logged at DEBUG: the request that needs
the origin reports the failure). Nothing here sends a byte of HTTP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import logging
import os
import select
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

Origin = tuple[str, str, int]
"""(scheme, host as in the Host header, port)."""

WARM_FOR_SECONDS = 600.0
"""How long after its last request an origin's connections are re-opened when servers close
them: long enough to span a pause between two tool runs, short enough that an idle mount
goes quiet."""
MIN_LIFETIME = 1.0
"""A connection closed by the server sooner than this after it was opened is not replaced."""
_WAIT_STEP = 0.05
"""Seconds between checks of a waiting exchange for its own cancellation."""


@dataclass
class PoolStats:
    """What the pool has done since the mount started (for ``remotefs status``)."""

    connects: int = 0
    """Connections opened, by requests and ahead of them."""
    opened_ahead: int = 0
    """Of those, opened ahead of any request (warming, and re-opening after idle closes)."""
    tls_handshakes: int = 0
    tls_resumed: int = 0
    """TLS handshakes that resumed a session."""
    closed_idle: int = 0
    """Idle connections the servers closed."""


@dataclass
class _Idle:
    conn: http.client.HTTPConnection
    origin: Origin
    opened: float


class ConnectionPool:
    """Idle connections per origin; ``open_connection(origin)`` makes an unconnected one."""

    def __init__(
        self,
        open_connection: Callable[[Origin], http.client.HTTPConnection],
        *,
        warm: int = 0,
        on_new_origin: Callable[[Origin], None] | None = None,
    ) -> None:
        self._open_connection = open_connection
        self._warm = warm
        self._on_new_origin = on_new_origin
        self._lock = threading.Condition(threading.Lock())  # not re-entered: cheaper
        self._idle: defaultdict[Origin, list[_Idle]] = defaultdict(list)
        self._by_fd: dict[int, _Idle] = {}
        self._opening: defaultdict[Origin, int] = defaultdict(int)
        self._waiting: defaultdict[Origin, int] = defaultdict(int)
        self._busy: defaultdict[Origin, int] = defaultdict(int)
        self._warm_until: dict[Origin, float] = {}
        self._sessions: dict[Origin, ssl.SSLSession] = {}
        self._seen: set[Origin] = set()
        self._watcher: _Watcher | None = None
        self._closed = False
        self.stats = PoolStats()
        self.min_lifetime = MIN_LIFETIME
        """A connection closed while idle sooner than this after its opening is not replaced."""

    # --- from the trio thread ----------------------------------------------------------------

    def warm(self, origin: Origin) -> None:
        """Keep ``origin`` warm from now on (opening its connections in the background)."""
        with self._lock:
            self._seen.add(origin)
            self._warm_until[origin] = time.monotonic() + WARM_FOR_SECONDS
            self._top_up(origin)

    def using(self, origin: Origin) -> None:
        """A request to ``origin`` is about to start: the origin is warm, and its other
        connections are opened beside this request's."""
        with self._lock:
            new = origin not in self._seen
            self._seen.add(origin)
            self._busy[origin] += 1
            if self._warm:
                self._warm_until[origin] = time.monotonic() + WARM_FOR_SECONDS
                self._top_up(origin)
        if new and self._on_new_origin is not None:
            self._on_new_origin(origin)

    def done(self, origin: Origin) -> None:
        """The request to ``origin`` ended (its connection, if kept, is idle again)."""
        with self._lock:
            self._busy[origin] -= 1
            if self._warm:  # it may have taken one opened ahead, or lost its own
                self._top_up(origin)

    def snapshot(self) -> dict[str, int]:
        """The counters, and the connections idle and being opened now (``remotefs status``)."""
        with self._lock:
            return {
                **dataclasses.asdict(self.stats),
                "idle": sum(len(items) for items in self._idle.values()),
                "opening": sum(self._opening.values()),
            }

    @property
    def opening(self) -> int:
        """Connections being opened ahead now, all origins together."""
        with self._lock:
            return sum(self._opening.values())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [item.conn for items in self._idle.values() for item in items]
            self._idle.clear()
            self._by_fd.clear()
            watcher, self._watcher = self._watcher, None
            self._lock.notify_all()
        if watcher is not None:
            watcher.close()
        for conn in idle:
            conn.close()

    # --- from worker threads -----------------------------------------------------------------

    def take(
        self, origin: Origin, cancelled: Callable[[], bool]
    ) -> http.client.HTTPConnection | None:
        """An open idle connection to ``origin``, waiting for one being opened if nobody else
        waits for it; ``None``: open a new one."""
        with self._lock:
            while True:
                conn = self._pop_idle(origin)
                if conn is not None:
                    return conn
                if self._opening[origin] <= self._waiting[origin] or self._closed or cancelled():
                    return None
                self._waiting[origin] += 1
                try:
                    self._lock.wait(_WAIT_STEP)
                finally:
                    self._waiting[origin] -= 1

    def give_back(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        """A connection after a complete response that keeps it open."""
        self._remember_session(origin, conn)
        with self._lock:
            if not self._closed:
                self._add_idle(_Idle(conn, origin, getattr(conn, "opened", time.monotonic())))
                return
        conn.close()

    def session(self, origin: Origin) -> ssl.SSLSession | None:
        return self._sessions.get(origin)

    def handshaken(self, origin: Origin, sock: ssl.SSLSocket) -> None:
        """A TLS handshake completed on a connection to ``origin``."""
        with self._lock:
            self.stats.tls_handshakes += 1
            if sock.session_reused:
                self.stats.tls_resumed += 1
        self._remember_session(origin, sock)

    def connected(self) -> None:
        with self._lock:
            self.stats.connects += 1

    # --- inside ------------------------------------------------------------------------------

    def _pop_idle(self, origin: Origin) -> http.client.HTTPConnection | None:
        items = self._idle.get(origin)
        while items:
            item = items.pop()
            self._forget_fd(item)
            if _still_open(item.conn):
                self._remember_session(origin, item.conn)
                return item.conn
            item.conn.close()
        return None

    def _add_idle(self, item: _Idle) -> None:
        self._idle[item.origin].append(item)
        sock = item.conn.sock
        if sock is None:
            return
        fd = sock.fileno()
        self._by_fd[fd] = item
        if self._watcher is None:
            self._watcher = _Watcher(self._readable)
        self._watcher.watch(fd)
        self._lock.notify_all()

    def _forget_fd(self, item: _Idle) -> None:
        sock = item.conn.sock
        if sock is None:
            return
        fd = sock.fileno()
        if self._by_fd.get(fd) is item:
            del self._by_fd[fd]
            if self._watcher is not None:
                self._watcher.unwatch(fd)

    def _top_up(self, origin: Origin) -> None:
        """Open connections to ``origin`` until ``warm`` exist (called under the lock)."""
        if self._closed or time.monotonic() >= self._warm_until.get(origin, 0.0):
            return
        existing = len(self._idle[origin]) + self._opening[origin] + self._busy[origin]
        for _ in range(self._warm - existing):
            self._opening[origin] += 1
            threading.Thread(
                target=self._open_ahead, args=(origin,), name="remotefs-connect", daemon=True
            ).start()

    def _open_ahead(self, origin: Origin) -> None:
        conn: http.client.HTTPConnection | None = None
        try:
            conn = self._open_connection(origin)
            conn.connect()
        except Exception as exc:  # the request that needs it reports the failure
            log.debug("opening a connection to %s:%d ahead failed: %s", *origin[1:], exc)
            if conn is not None:
                conn.close()
            conn = None
        with self._lock:
            self._opening[origin] -= 1
            self._lock.notify_all()
            if conn is not None:
                self.stats.opened_ahead += 1
                if not self._closed:
                    self._add_idle(_Idle(conn, origin, time.monotonic()))
                    return
        if conn is not None:
            conn.close()

    def _readable(self, fd: int) -> None:
        """From the watcher: an idle socket turned readable."""
        with self._lock:
            item = self._by_fd.get(fd)
            if item is None or item.conn.sock is None or item.conn.sock.fileno() != fd:
                return  # taken meanwhile
            if _still_open(item.conn):  # TLS 1.3 tickets only: drained, watched again
                self._remember_session(item.origin, item.conn)
                if self._watcher is not None:
                    self._watcher.watch(fd)
                return
            self._idle[item.origin].remove(item)
            del self._by_fd[fd]
            self.stats.closed_idle += 1
            if time.monotonic() - item.opened >= self.min_lifetime:
                self._top_up(item.origin)
        item.conn.close()

    def _remember_session(self, origin: Origin, conn_or_sock: object) -> None:
        sock = getattr(conn_or_sock, "sock", conn_or_sock)
        if not isinstance(sock, ssl.SSLSocket):
            return
        with contextlib.suppress(OSError, ValueError):
            session = sock.session
            # TLS 1.3 resumes only from a ticket; TLS 1.2 also from the session's ID
            if session is not None and (session.has_ticket or sock.version() == "TLSv1.2"):
                self._sessions[origin] = session  # one dict store: atomic, with or without _lock


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """False when the server closed an idle connection: its socket is readable (EOF, or bytes
    nobody asked for). A TLS socket readable only for post-handshake messages (TLS 1.3
    session tickets) is drained and stays open. ``poll``, not ``select``: any descriptor
    number works."""
    sock = conn.sock
    if sock is None:
        return False
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN)
        if not poller.poll(0):
            return True
    except (OSError, ValueError):
        return False
    if not isinstance(sock, ssl.SSLSocket):
        return False
    timeout = sock.gettimeout()
    try:
        sock.settimeout(0.0)
        sock.recv(1)  # application data nobody asked for, or b"" at the end: not reusable
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return True  # only TLS records for the library (tickets): still a clean connection
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)
    return False


class _Watcher:
    """One daemon thread blocked in ``epoll`` on the idle sockets (one-shot: a socket is
    reported once, then must be watched again). A pipe wakes it to stop."""

    def __init__(self, on_readable: Callable[[int], None]) -> None:
        self._on_readable = on_readable
        self._epoll = select.epoll()
        self._wake_read, self._wake_write = os.pipe()
        self._epoll.register(self._wake_read, select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, name="remotefs-idle", daemon=True)
        self._thread.start()

    def watch(self, fd: int) -> None:
        mask = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT
        try:
            self._epoll.register(fd, mask)
        except FileExistsError:  # reported once already (one-shot): armed again
            self._epoll.modify(fd, mask)
        except (OSError, ValueError):  # closed meanwhile
            pass

    def unwatch(self, fd: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        try:
            while True:
                try:
                    events = self._epoll.poll()
                except InterruptedError:
                    continue
                for fd, _ in events:
                    if fd == self._wake_read:
                        return
                    try:
                        self._on_readable(fd)
                    except Exception:  # never let one socket end the watching
                        log.exception("watching idle connections")
        finally:
            self._epoll.close()
            os.close(self._wake_read)
            os.close(self._wake_write)
