"""The mount's control channel: warm, pin, check and evict files; its live status.

A unix socket, private to the mounting user, served by the running mount (so a warm's
bytes go through the mount's own block cache: single-flight with readers, one rate budget):

- the socket sits in the endpoint's cache directory (0700), or, when that path is too long
  for a socket address, in ``$XDG_RUNTIME_DIR/remotefs/`` (when set) or
  ``/tmp/remotefs-UID/``, made 0700 and checked to be ours and private: a directory that is
  not (another user made it first) costs the mount its control socket (one WARNING), never
  the mount;
- the mount names it in the ``user.remotefs.control`` extended attribute of its root, which
  is how ``remotefs warm``/``status`` find it from any path inside the mount;
- a peer is accepted only if its uid (``SO_PEERCRED``) is the mount's or root's.

**Protocol**: one request per connection, a JSON line; the answer is JSON lines ("events"),
the last one ``done`` or ``error``. Files are named by inode number (what ``stat`` of a path
in the mount returns): the client walks the tree through the mount itself.

- ``{"op": "warm", "inodes": [...], "pin": bool, "jobs": N}`` → ``start`` (files, bytes),
  ``progress`` (bytes), ``file`` (inode, ok, error) per file, ``done``. With ``pin``, the
  pins are checked against ``PIN_SHARE`` of the cache's slots (``remotefs.cache.store``) and
  made before anything is fetched
  (``error`` and nothing changed when they would not fit). A client that goes away (Ctrl-C)
  stops the warm; what was fetched stays.
- ``{"op": "check", "inodes": [...]}`` → a ``file`` event per file (size, held, pinned).
- ``{"op": "evict", "inodes": [...]}`` → a ``file`` event per file, its bytes and pin gone.
- ``{"op": "status"}`` → one ``status`` event: :func:`Status.snapshot`.

Inodes are JSON integers (``1 <= n < 2**64``; not ``1.0``, ``true`` or ``1e400``), ``jobs``
a positive integer (at most 64 are used), ``pin`` a boolean. Anything else (not JSON,
nested too deep, another type) is answered ``error`` ("bad request: …"); a cache that
cannot be changed (a disk error) is an ``error`` (pin) or a failed ``file`` (evict).

**Nothing a client does ends the mount**: each connection is served under a guard that
logs what escapes it (a client gone mid-answer at DEBUG, anything else at WARNING with its
traceback) and closes that connection only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import socket
import sqlite3
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from remotefs.cache.blockcache import BlockCache
from remotefs.cache.extents import CHUNK_SIZE
from remotefs.cache.store import PinsTooLarge
from remotefs.errors import NotFound, RemoteError
from remotefs.fs.namespace import Namespace
from remotefs.http.ratelimit import RateLimitState
from remotefs.metrics import METRICS, Metrics
from remotefs.model import RemoteEntry
from remotefs.units import format_size

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_SOCKET_PATH = 100
"""Bytes a unix socket path may have here (the kernel's limit is 107)."""
MAX_REQUEST = 16 << 20
"""Bytes of one request line at most (a list of inodes)."""
MAX_INODE = 1 << 64
OPS = frozenset({"status", "check", "evict", "warm"})
DEFAULT_JOBS, MAX_JOBS = 12, 64
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError)
"""What sending to (or reading from) a client that hung up raises."""
_DISK_ERRORS = (OSError, sqlite3.Error)


def socket_path(directory: Path) -> Path | None:
    """Where the control socket of the mount whose cache is ``directory`` lives; ``None``
    (one WARNING) when the only place for it is a directory that is not ours alone."""
    path = directory / SOCKET_NAME
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(directory)).hexdigest()[:16]
    candidates = [Path(f"/tmp/remotefs-{os.getuid()}")]
    runtime = _runtime_dir()
    if runtime is not None:
        candidates.insert(0, runtime / "remotefs")
    for private in candidates:
        if len(os.fsencode(private / f"{digest}.sock")) > MAX_SOCKET_PATH:
            continue
        problem = _private_directory(private)
        if problem is None:
            return private / f"{digest}.sock"
        log.warning(
            "no control socket for this mount (remotefs warm and status will not reach it): "
            "%s; remove it, or give the mount a shorter --cache-dir",
            problem,
        )
        return None
    log.warning(
        "no control socket for this mount: no short enough place for it; give the mount a "
        "shorter --cache-dir"
    )
    return None


def _runtime_dir() -> Path | None:
    """``$XDG_RUNTIME_DIR`` if it is set and is a directory of this user (not one a ``sudo
    -E`` or an old session left in the environment), else ``None``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if not os.path.isabs(runtime):
        return None
    try:
        st = os.stat(runtime)
    except OSError:
        return None
    return Path(runtime) if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() else None


def _private_directory(path: Path) -> str | None:
    """Make ``path`` (0700) unless it exists; what is wrong with it, or ``None`` if it is a
    directory of this user that nobody else may enter."""
    try:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        st = path.lstat()
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_uid != os.getuid():
        return f"{path} belongs to uid {st.st_uid}, not to this user ({os.getuid()})"
    if st.st_mode & 0o077:
        return f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):04o}, not 0700)"
    return None


class BadRequest(ValueError):
    """A request the protocol does not allow: answered ``error``, never fatal."""


@dataclass(frozen=True)
class Request:
    op: str
    inodes: tuple[int, ...] = ()
    """Without repeats, in the order given."""
    pin: bool = False
    jobs: int = DEFAULT_JOBS


def _is_int(value: object, low: int, high: float) -> bool:
    return type(value) is int and low <= value < high  # not bool, not float


def parse_request(line: bytes) -> Request:
    """A request line, checked; ``BadRequest`` (with a short reason) for anything else."""
    try:
        raw = json.loads(line)
    except RecursionError:
        raise BadRequest("JSON nested too deep") from None
    except ValueError as exc:  # not JSON, not UTF-8, an integer of thousands of digits
        raise BadRequest(f"not a JSON line ({str(exc)[:100]})") from None
    if not isinstance(raw, dict):
        raise BadRequest("expected a JSON object")
    op = raw.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise BadRequest(f"unknown op {str(op)[:40]!r}")
    if op == "status":
        return Request(op)
    inodes = raw.get("inodes")
    if not isinstance(inodes, list) or not all(_is_int(i, 1, MAX_INODE) for i in inodes):
        raise BadRequest("inodes: expected a list of inode numbers (positive integers)")
    jobs = raw.get("jobs")
    if jobs is None:
        jobs = DEFAULT_JOBS
    elif not _is_int(jobs, 1, math.inf):
        raise BadRequest("jobs: expected a positive integer")
    pin = raw.get("pin", False)
    if not isinstance(pin, bool):
        raise BadRequest("pin: expected true or false")
    return Request(op, tuple(dict.fromkeys(inodes)), pin, min(MAX_JOBS, jobs))


@dataclass
class Status:
    """What ``remotefs status`` shows, read from the mount's parts when asked."""

    mountpoint: Path
    platform: str
    endpoint: str
    cache: BlockCache
    cache_size: int
    rate_limit: RateLimitState | None
    shared: Callable[[], dict[str, Any]] | None = None
    """The cluster's shared state, described (``SharedState.snapshot``), with ``--shared-state``."""
    connections: Callable[[], dict[str, int]] | None = None
    """The connection pool's counters (``ConnectionPool.snapshot``); ``None`` behind a proxy."""
    metrics: Metrics = field(default_factory=lambda: METRICS)

    def snapshot(self) -> dict[str, Any]:
        m = self.metrics
        pins = self.cache.pins()
        fetches, fetching = self.cache.in_flight()
        rate = None
        if self.rate_limit is not None and self.rate_limit.remaining is not None:
            reset = self.rate_limit.reset
            rate = {
                "limit": self.rate_limit.limit,
                "remaining": max(0, self.rate_limit.remaining),
                "reset_in_s": max(0.0, reset - time.time()) if reset else None,
            }
        return {
            "mountpoint": str(self.mountpoint),
            "platform": self.platform,
            "endpoint": self.endpoint,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - m.started, 1),
            "requests": {
                kind: {
                    "requests": c.requests,
                    "retries": c.attempts - c.requests,
                    "errors": c.errors,
                    "bytes": c.bytes,
                }
                for kind, c in sorted(m.requests.items())
            },
            "bytes_fetched": m.bytes_fetched,
            "bytes_served": m.bytes_served,
            "reads": m.reads,
            "read_hits": m.read_hits,
            "hit_ratio": round(m.read_hits / m.reads, 4) if m.reads else None,
            "disk_cache": {
                "used_bytes": self.cache.disk.slots_used * (1 << 20),
                "limit_bytes": self.cache_size,
            },
            "pins": {
                "files": len(pins),
                "bytes": sum(pins.values()),
                "slot_bytes": self.cache.disk.pinned_slots() * CHUNK_SIZE,
                "limit_bytes": self.cache.disk.pin_slots * CHUNK_SIZE,
            },
            "memory": {"rss_bytes": _rss(), "cache_bytes": self.cache.memory_in_use},
            "in_flight": {"fetches": fetches, "bytes": fetching},
            "rate_limit": rate,
            "shared_state": self.shared() if self.shared is not None else None,
            "connections": self.connections() if self.connections is not None else None,
            "errors_answered": m.errors_answered,
            "last_error": {"message": m.last_error, "at": m.last_error_at}
            if m.last_error
            else None,
        }


def _rss() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


Invalidate = Callable[[int], Awaitable[None]]
"""Drop what the kernel caches of an inode's bytes (its page cache)."""


async def _keep_kernel_cache(inode: int) -> None:
    """No kernel to tell (tests that run the server alone)."""


class ControlServer:
    def __init__(
        self,
        path: Path,
        namespace: Namespace,
        cache: BlockCache,
        status: Status,
        invalidate: Invalidate = _keep_kernel_cache,
    ) -> None:
        """``invalidate``: called for each evicted file, so that the kernel's page cache
        (files are opened with ``keep_cache``) does not go on serving its bytes."""
        self.path = path
        self.namespace = namespace
        self.cache = cache
        self.status = status
        self.invalidate = invalidate

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a socket left by a mount that died
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            await sock.bind(os.fsencode(self.path))
        finally:
            os.umask(old)
        sock.listen(16)
        listener = trio.SocketListener(sock)
        try:
            task_status.started()
            await trio.serve_listeners(self._serve, [listener])
        finally:
            with contextlib.suppress(OSError):
                self.path.unlink()

    async def _serve(self, stream: trio.SocketStream) -> None:
        """One connection, under the guard: whatever escapes it ends this connection only.

        Errors raised inside the warm's nursery arrive as exception groups (a client that
        hangs up mid-stream: ``BrokenResourceError`` from sending a progress event), hence
        ``except*``. A cancellation (the mount shutting down) passes through."""
        async with stream:

            async def emit(event: dict[str, Any]) -> None:
                await stream.send_all(json.dumps(event).encode() + b"\n")

            try:
                if _trusted(stream.socket):
                    await self._connection(stream, emit)
            except* _GONE:
                log.debug("control socket: a client went away before its answer was complete")
            except* Exception as group:
                log.warning(
                    "control socket: a request failed unexpectedly (the mount goes on)",
                    exc_info=group,
                )
                failed = {"event": "error", "message": "the mount failed to answer; see its log"}
                with contextlib.suppress(*_GONE):
                    await emit(failed)

    async def _connection(self, stream: trio.SocketStream, emit: Emit) -> None:
        try:
            request = parse_request(await _read_line(stream))
        except BadRequest as exc:
            await emit({"event": "error", "message": f"bad request: {exc}"})
            return
        await self._answer(request, emit, stream)

    async def _answer(self, request: Request, emit: Emit, stream: trio.SocketStream) -> None:
        if request.op == "status":
            await emit({"event": "status", **self.status.snapshot()})
            return
        entries = []
        for inode in request.inodes:
            try:
                node = await self.namespace.sized(inode)
            except NotFound:
                await emit({"event": "file", "inode": inode, "ok": False, "error": "not found"})
                continue
            except RemoteError as exc:  # its size could not be learned (ODM)
                await emit({"event": "file", "inode": inode, "ok": False, "error": str(exc)})
                continue
            if not node.entry.is_dir:
                entries.append((inode, node.entry))
        if request.op == "check":
            for inode, entry in entries:
                await emit(
                    {
                        "event": "file",
                        "inode": inode,
                        "ok": True,
                        "size": entry.size,
                        "held": self.cache.held_bytes(entry),
                        "pinned": self.cache.pinned(entry),
                    }
                )
        elif request.op == "evict":
            for inode, entry in entries:
                try:
                    await self.cache.evict(entry)
                except _DISK_ERRORS as exc:
                    reason = f"the disk cache cannot be changed: {exc}"
                    log.warning("evicting %s: %s", entry.name, reason)
                    await emit({"event": "file", "inode": inode, "ok": False, "error": reason})
                    continue
                await self.invalidate(inode)
                await emit({"event": "file", "inode": inode, "ok": True})
        elif not await self._warm(entries, request, emit, stream):
            return
        await emit({"event": "done"})

    async def _warm(
        self,
        entries: list[tuple[int, RemoteEntry]],
        request: Request,
        emit: Emit,
        stream: trio.SocketStream,
    ) -> bool:
        """Warm (and pin) ``entries``, emitting progress; False if refused before starting."""
        jobs = request.jobs
        if request.pin:
            refused = await self._pin([e for _, e in entries])
            if refused is not None:
                await emit({"event": "error", "message": refused})
                return False
        await emit(
            {"event": "start", "files": len(entries), "bytes": sum(e.size for _, e in entries)}
        )
        send, receive = trio.open_memory_channel[dict[str, Any]](math.inf)
        files = max(1, jobs // 4)  # files at once; pieces: jobs
        todo = iter(entries)  # shared by the workers: each file is taken once

        async def warm_one(inode: int, entry: RemoteEntry) -> None:
            def progress(nbytes: int) -> None:
                send.send_nowait({"event": "progress", "inode": inode, "bytes": nbytes})

            try:
                await self.cache.warm(entry, jobs=jobs, progress=progress)
            except (RemoteError, trio.TooSlowError) as exc:
                send.send_nowait({"event": "file", "inode": inode, "ok": False, "error": str(exc)})
                return
            send.send_nowait({"event": "file", "inode": inode, "ok": True})

        async def worker() -> None:
            for inode, entry in todo:
                await warm_one(inode, entry)

        async def warm_all() -> None:
            # ``files`` workers, not a task per file: a warm of 100,000 files holds a few
            # tasks, not 100,000 of them waiting for their turn.
            async with send, trio.open_nursery() as inner:
                for _ in range(min(files, len(entries))):
                    inner.start_soon(worker)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(warm_all)
            nursery.start_soon(_cancel_when_closed, stream, nursery.cancel_scope)
            async with receive:
                async for event in receive:
                    await emit(event)
            nursery.cancel_scope.cancel()
        return True

    async def _pin(self, entries: list[RemoteEntry]) -> str | None:
        """Pin ``entries`` (all or none); why not, if refused."""
        try:
            await self.cache.pin(entries)
        except PinsTooLarge as exc:
            return (
                f"pinning these {exc.files} files would pin {format_size(exc.slots * CHUNK_SIZE)} "
                "(the cache keeps files in 1 MiB slots: each file takes its size rounded up), "
                f"more than the {format_size(exc.allowed * CHUNK_SIZE)} allowed (half of "
                "--cache-size); nothing was pinned or fetched"
            )
        except _DISK_ERRORS as exc:
            log.warning("pinning: the disk cache cannot be changed: %s", exc)
            return f"the disk cache cannot be changed ({exc}); nothing was pinned or fetched"
        return None


async def _cancel_when_closed(stream: trio.SocketStream, scope: trio.CancelScope) -> None:
    """The client sends nothing after its request: a read that returns means it is gone."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.receive_some(1)
    scope.cancel()


async def _read_line(stream: trio.SocketStream) -> bytes:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1 << 16)
        if not chunk:
            break
        data += chunk  # a bytearray grows in place: linear in the request's size
        if len(data) > MAX_REQUEST:
            raise BadRequest(f"larger than {MAX_REQUEST} bytes")
    return bytes(data)


def _trusted(sock: trio.socket.SocketType) -> bool:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    if uid in (os.getuid(), 0):
        return True
    log.warning("control socket: refused a peer of uid %d", uid)
    return False


Emit = Callable[[dict[str, Any]], Awaitable[None]]
