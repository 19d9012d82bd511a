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
  would be) — one waiter per connection being opened, for at most ``AHEAD_WAIT_SECONDS`` (an
  opening stuck in a name lookup must not hold it); the others open their own at once.
- **Failing origins.** When an opening ahead fails (refused, unreachable, TLS refused), the
  origin is not warmed again until a request to it gets an answer: a host that is down costs
  the requests that need it, never a stream of connects beside them.
- **Re-opened without a request.** One thread watches every idle socket (``epoll``, one-shot:
  it wakes only when a socket turns readable, never on a timer). A socket that turns readable
  while idle was closed by the server (its idle timeout) or sent something nobody asked for:
  it is closed, and for a warm origin a new connection is opened in its place — a TCP connect
  and a TLS handshake, never an HTTP request: keeping warm spends no API budget. A socket
  readable only because TLS 1.3 sent its session tickets after the handshake is drained and
  kept. A connection the server closed within ``MIN_LIFETIME`` of being opened is not
  replaced (a server that closes at once must not make the pool reconnect in a loop); the
  next request warms the origin again. Each connection opened ahead that the server closes
  unused lowers the origin's target by one, down to one connection, until its next request:
  an idle mount keeps one connection per host open, not four.
- **TLS resumption.** The newest resumable session of each origin is kept (after the
  handshake for TLS 1.2, after the first read for TLS 1.3, whose tickets arrive then) and
  offered by every new connection to that origin: a resumed handshake skips the certificate
  exchange and, with TLS 1.2, one round trip. A connection's session is read until it
  has been kept once (TLS 1.2: after the handshake; TLS 1.3: after tickets drained while
  idle, or after its first exchange, which its tickets precede), never after every exchange:
  Python copies the session each time it is read (~0.3 ms, measured with a TLS 1.3 session
  of the tests' certificate), and a connection's session does not change once its tickets
  have come.

Invariants: a connection is in at most one place — an idle list (and then watched), an
exchange, or a thread opening it; every count here is changed under ``_lock``, which is
never re-entered, and threads are started outside it; a connection that fails to open costs
only itself (logged at DEBUG: the request that needs the origin reports the failure);
:meth:`ConnectionPool.close` leaves nothing open (the sockets of connections being opened
ahead are shut down, so their threads end at once). Nothing here sends a byte of HTTP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import http.client
import logging
import os
import select
import socket
import ssl
import threading
import time
import weakref
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
AHEAD_WAIT_SECONDS = 2.0
"""How long a request waits for a connection being opened ahead before opening its own (one
stuck in a name lookup or a connect to an address that drops packets must not hold it)."""
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
    served: bool
    """It carried a response (else it was opened ahead and never used)."""


Opener = Callable[[Origin, Callable[[socket.socket], None]], http.client.HTTPConnection]
"""``(origin, attach)``: an unconnected connection whose sockets are handed to ``attach``."""


class ConnectionPool:
    """Idle connections per origin; ``open_connection(origin, attach)`` makes an unconnected
    one. Thread-safe; ``warm``, ``using``, ``take_idle``, ``answered`` and ``done`` are called on
    the trio thread, the rest from worker threads too."""

    def __init__(
        self,
        open_connection: Opener,
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
        self._target: dict[Origin, int] = {}
        """Connections to keep per origin: ``warm``, one less for each opened ahead that the
        server closed unused (down to 1), ``warm`` again on the next request."""
        self._warm_until: dict[Origin, float] = {}
        self._failing: set[Origin] = set()
        """Origins an ahead opening failed for: not warmed until a request gets an answer."""
        self._connecting: set[socket.socket] = set()
        """Sockets of connections being opened ahead: shut down by :meth:`close`."""
        self._sessions: dict[Origin, ssl.SSLSession] = {}
        self._session_read: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        """Sockets whose session is not read again: it was kept, or their first exchange has
        ended (a TLS 1.3 server sends its tickets before its first answer, or never)."""
        self._reported: set[Origin] = set()
        self._watcher: _Watcher | None = None
        self._closed = False
        self.stats = PoolStats()
        self.min_lifetime = MIN_LIFETIME
        """A connection closed while idle sooner than this after its opening is not replaced."""
        self.ahead_wait = AHEAD_WAIT_SECONDS

    # --- from the trio thread ----------------------------------------------------------------

    def warm(self, origin: Origin) -> None:
        """Keep ``origin`` warm from now on (opening its connections in the background)."""
        with self._lock:
            self._warm_until[origin] = time.monotonic() + WARM_FOR_SECONDS
            self._failing.discard(origin)
            starts = self._top_up(origin)
        self._start(origin, starts)

    def using(self, origin: Origin) -> None:
        """A request to ``origin`` is about to start: the origin is warm, and its other
        connections are opened beside this request's."""
        starts = 0
        with self._lock:
            self._busy[origin] += 1
            if self._warm:
                self._warm_until[origin] = time.monotonic() + WARM_FOR_SECONDS
                self._target[origin] = self._warm
                starts = self._top_up(origin)
        self._start(origin, starts)

    def answered(self, origin: Origin) -> None:
        """A request to ``origin`` got an answer: it is reachable (warmed again if an opening
        failed), and reported once to ``on_new_origin``."""
        with self._lock:
            self._failing.discard(origin)
            new = origin not in self._reported
            self._reported.add(origin)
        if new and self._on_new_origin is not None:
            self._on_new_origin(origin)

    def done(self, origin: Origin) -> None:
        """The request to ``origin`` ended (its connection, if kept, is idle again)."""
        starts = 0
        with self._lock:
            self._busy[origin] -= 1
            if self._warm:  # it may have taken one opened ahead, or lost its own
                starts = self._top_up(origin)
        self._start(origin, starts)

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

    @property
    def waiting(self) -> int:
        """Requests waiting for a connection being opened ahead now, all origins together."""
        with self._lock:
            return sum(self._waiting.values())

    def close(self) -> None:
        """Close every idle connection, end those being opened ahead (their sockets are shut
        down: the threads opening them end at once), stop the watcher."""
        with self._lock:
            self._closed = True
            idle = [item.conn for items in self._idle.values() for item in items]
            self._idle.clear()
            self._by_fd.clear()
            connecting, self._connecting = list(self._connecting), set()
            watcher, self._watcher = self._watcher, None
            self._lock.notify_all()
        for sock in connecting:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # also for TLS: see transport
        if watcher is not None:
            watcher.close()
        for conn in idle:
            conn.close()

    # --- from worker threads -----------------------------------------------------------------

    def take(
        self, origin: Origin, cancelled: Callable[[], bool]
    ) -> http.client.HTTPConnection | None:
        """An open idle connection to ``origin``, waiting (up to ``ahead_wait``) for one being
        opened if nobody else waits for it; ``None``: open a new one."""
        give_up = time.monotonic() + self.ahead_wait
        with self._lock:
            while not cancelled():
                conn = self._pop_idle(origin)
                if conn is not None:
                    return conn
                if (
                    self._opening[origin] <= self._waiting[origin]
                    or self._closed
                    or time.monotonic() >= give_up
                ):
                    return None
                self._waiting[origin] += 1
                try:
                    self._lock.wait(_WAIT_STEP)
                finally:
                    self._waiting[origin] -= 1
        return None

    def take_idle(self, origin: Origin) -> http.client.HTTPConnection | None:
        """An open idle connection to ``origin`` if there is one, without waiting (for the
        trio thread)."""
        with self._lock:
            return self._pop_idle(origin)

    def give_back(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        """A connection after a complete response that keeps it open."""
        self._remember_session(origin, conn, last=True)
        with self._lock:
            if not self._closed:
                opened = getattr(conn, "opened", time.monotonic())
                self._add_idle(_Idle(conn, origin, opened, served=True))
                return
        conn.close()

    def session(self, origin: Origin) -> ssl.SSLSession | None:
        return self._sessions.get(origin)

    def forget_session(self, origin: Origin) -> None:
        """The session failed to resume (or to be set): new connections start afresh."""
        self._sessions.pop(origin, None)

    def handshaken(self, origin: Origin, sock: ssl.SSLSocket) -> None:
        """A TLS handshake completed on a connection to ``origin``."""
        with self._lock:
            self.stats.tls_handshakes += 1
            if sock.session_reused:
                self.stats.tls_resumed += 1
        if sock.version() != "TLSv1.3":  # TLS 1.3 tickets come after the handshake
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
            state = _idle_state(item.conn)
            if state is _IdleState.TICKETS:
                self._remember_session(origin, item.conn)
            if state is not _IdleState.CLOSED:
                return item.conn
            item.conn.close()
        return None

    def _add_idle(self, item: _Idle) -> None:
        self._idle[item.origin].append(item)
        self._lock.notify_all()
        sock = item.conn.sock
        if sock is None:
            return
        if self._watcher is None:
            try:
                self._watcher = _Watcher(self._readable)
            except (OSError, RuntimeError) as exc:  # no descriptors or threads left: unwatched
                log.debug("cannot watch idle connections: %s", exc)
                return
        fd = sock.fileno()
        self._by_fd[fd] = item
        self._watcher.watch(fd)

    def _forget_fd(self, item: _Idle) -> None:
        sock = item.conn.sock
        if sock is None:
            return
        fd = sock.fileno()
        if self._by_fd.get(fd) is item:
            del self._by_fd[fd]
            if self._watcher is not None:
                self._watcher.unwatch(fd)

    def _top_up(self, origin: Origin) -> int:
        """How many connections to open ahead to ``origin`` so that its target exist (called
        under the lock; counted as opening; :meth:`_start` starts them, outside the lock)."""
        if (
            self._closed
            or origin in self._failing
            or time.monotonic() >= self._warm_until.get(origin, 0.0)
        ):
            return 0
        target = self._target.setdefault(origin, self._warm)
        existing = len(self._idle[origin]) + self._opening[origin] + self._busy[origin]
        starts = max(0, target - existing)
        self._opening[origin] += starts
        return starts

    def _start(self, origin: Origin, count: int) -> None:
        for _ in range(count):
            try:
                threading.Thread(
                    target=self._open_ahead, args=(origin,), name="remotefs-connect", daemon=True
                ).start()
            except RuntimeError as exc:  # no thread to be had: not counted as opening
                log.debug("cannot open a connection ahead: %s", exc)
                with self._lock:
                    self._opening[origin] -= 1
                    self._lock.notify_all()

    def _open_ahead(self, origin: Origin) -> None:
        conn: http.client.HTTPConnection | None = None
        mine: list[socket.socket] = []

        def attach(sock: socket.socket) -> None:  # close() may shut it down from now on
            with self._lock:
                if self._closed:
                    raise OSError("the pool is closed")
                self._connecting.add(sock)
                mine.append(sock)

        try:
            conn = self._open_connection(origin, attach)
            conn.connect()
        except Exception as exc:  # the request that needs it reports the failure
            log.debug("opening a connection to %s:%d ahead failed: %s", *origin[1:], exc)
            if conn is not None:
                conn.close()
            conn = None
        with self._lock:
            self._opening[origin] -= 1
            self._lock.notify_all()
            self._connecting.difference_update(mine)
            if conn is None:
                self._failing.add(origin)
            else:
                self.stats.opened_ahead += 1
                if not self._closed:
                    self._add_idle(_Idle(conn, origin, time.monotonic(), served=False))
                    return
        if conn is not None:
            conn.close()

    def _readable(self, fd: int) -> None:
        """From the watcher: an idle socket turned readable."""
        starts = 0
        with self._lock:
            item = self._by_fd.get(fd)
            if item is None or item.conn.sock is None or item.conn.sock.fileno() != fd:
                return  # taken meanwhile
            state = _idle_state(item.conn)
            if state is _IdleState.TICKETS:  # drained, watched again
                self._remember_session(item.origin, item.conn)
            if state is not _IdleState.CLOSED:
                if self._watcher is not None:
                    self._watcher.watch(fd)
                return
            self._idle[item.origin].remove(item)
            del self._by_fd[fd]
            self.stats.closed_idle += 1
            try:
                if not item.served:  # opened ahead, closed unused: keep fewer of these
                    target = self._target.get(item.origin, self._warm)
                    self._target[item.origin] = max(1, target - 1)
                if time.monotonic() - item.opened >= self.min_lifetime:
                    starts = self._top_up(item.origin)
            finally:
                item.conn.close()
        self._start(item.origin, starts)

    def _remember_session(
        self, origin: Origin, conn_or_sock: object, *, last: bool = False
    ) -> None:
        """Keep the session of a TLS connection for ``origin`` if it is resumable, unless it
        was kept already; ``last``: its first exchange has ended, it is not read again."""
        sock = getattr(conn_or_sock, "sock", conn_or_sock)
        if not isinstance(sock, ssl.SSLSocket) or sock in self._session_read:
            return
        kept = False
        with contextlib.suppress(OSError, ValueError):
            session = sock.session  # a copy (~0.3 ms): read as few times as this
            # TLS 1.3 resumes only from a ticket; TLS 1.2 also from the session's ID
            if session is not None and (session.has_ticket or sock.version() == "TLSv1.2"):
                self._sessions[origin] = session  # one dict store: atomic, with or without _lock
                kept = True
        if kept or last:
            self._session_read.add(sock)  # a set's add: atomic, with or without _lock


class _IdleState(enum.Enum):
    OPEN = "open"
    TICKETS = "open; TLS records for the library (session tickets) were drained"
    CLOSED = "closed by the server, or sent bytes nobody asked for"


def _idle_state(conn: http.client.HTTPConnection) -> _IdleState:
    """Whether an idle connection is still usable: not when its socket is readable (EOF, or
    bytes nobody asked for), unless it is a TLS socket readable only for post-handshake
    messages (TLS 1.3 session tickets), which are drained. ``poll``, not ``select``: any
    descriptor number works."""
    sock = conn.sock
    if sock is None:
        return _IdleState.CLOSED
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN)
        if not poller.poll(0):
            return _IdleState.OPEN
    except (OSError, ValueError):
        return _IdleState.CLOSED
    if not isinstance(sock, ssl.SSLSocket):
        return _IdleState.CLOSED
    timeout = sock.gettimeout()
    try:
        sock.settimeout(0.0)
        sock.recv(1)  # application data nobody asked for, or b"" at the end: not reusable
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return _IdleState.TICKETS  # only records for the library: still a clean connection
    except OSError:
        return _IdleState.CLOSED
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)
    return _IdleState.CLOSED


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
        if not self._thread.is_alive():  # else it still polls them: left to the process's end
            self._epoll.close()
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _run(self) -> None:
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
