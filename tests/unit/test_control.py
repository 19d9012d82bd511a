"""The control server alone (a real unix socket, a real block cache, a fake platform): what
it answers to requests it must refuse, to clients that hang up, and to a disk that fails;
and where its socket goes. The same server in a real mount: ``tests/mount/test_control.py``."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from remotefs.cache.blockcache import BlockCache
from remotefs.cache.extents import CHUNK_SIZE
from remotefs.control import MAX_SOCKET_PATH, ControlServer, Status, parse_request, socket_path
from remotefs.emulator.content import GeneratedContent
from remotefs.fs.namespace import ROOT_INODE, Namespace
from remotefs.model import RemoteEntry

SIZE = 8 * CHUNK_SIZE
CONTENT = GeneratedContent(SIZE, seed=5)
FILES = [RemoteEntry(f"f{i}", f"file{i}.bin", False, size=SIZE, version="v1") for i in range(3)]


class Files:
    xattr_namespace = "t"

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.fetched = 0

    def root(self) -> RemoteEntry:
        return RemoteEntry("root", "", True)

    async def list_dir(self, directory: RemoteEntry) -> list[RemoteEntry]:
        return FILES

    def queryable(self, directory: RemoteEntry) -> bool:
        return False

    async def read(self, entry: RemoteEntry, offset: int, size: int) -> bytes:
        if offset > 0:  # the first piece of each file arrives; the rest waits for the gate
            await self.gate.wait()
        self.fetched += 1
        return CONTENT.read(offset, size)


class Observed(ControlServer):
    """The server, telling when it is done with each connection, however that ended."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.finished_send, self.finished = trio.open_memory_channel[None](math.inf)

    async def _serve(self, stream: trio.SocketStream) -> None:
        try:
            await super()._serve(stream)
        finally:
            self.finished_send.send_nowait(None)


@dataclass
class Server:
    path: Path
    cache: BlockCache
    inodes: list[int]
    backend: Files
    invalidated: list[int]
    control: Observed

    async def ask(self, payload: bytes) -> list[dict[str, Any]]:
        """Send ``payload`` as it is (and say no more if it is not a whole line); every
        event of the answer, until the server closes."""
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with sock:
            await sock.connect(os.fsencode(self.path))
            await sock.send(payload)
            if not payload.endswith(b"\n"):
                sock.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := await sock.recv(1 << 16):
                data += chunk
        return [json.loads(line) for line in data.splitlines()]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    backend = Files()
    invalidated: list[int] = []

    async def invalidate(inode: int) -> None:
        invalidated.append(inode)

    async with trio.open_nursery() as nursery:
        cache = BlockCache(
            tmp_path / "cache", size_limit=64 * CHUNK_SIZE, fetch=backend.read, namespace="t"
        )
        await nursery.start(cache.run)
        names = Namespace(backend, backend.root(), ttl=60, timeout=30)
        inodes = [(await names.lookup(ROOT_INODE, f.name.encode())).inode for f in FILES]
        status = Status(tmp_path / "m", "test", "t", cache, 64 * CHUNK_SIZE, None)
        path = tmp_path / "control.sock"
        control = Observed(path, names, cache, status, invalidate)
        await nursery.start(control.run)
        # Anything escaping a connection would end this nursery, and the test with it.
        yield Server(path, cache, inodes, backend, invalidated, control)
        backend.gate.set()
        nursery.cancel_scope.cancel()
    cache.close()


MALFORMED = [
    b'{"op": "warm", "inodes": [1e400]}\n',  # inf: int() of it raised OverflowError
    b'{"op": "check", "inodes": [2], "jobs": 1e400}\n',
    b'{"op": "warm", "inodes": [2], "jobs": -3}\n',
    b'{"op": "check", "inodes": [2.0]}\n',
    b'{"op": "check", "inodes": [true]}\n',
    b'{"op": "check", "inodes": [-1]}\n',
    b'{"op": "check", "inodes": [18446744073709551616]}\n',  # 2**64
    b'{"op": "check", "inodes": ["2"]}\n',
    b'{"op": "check", "inodes": 2}\n',
    b'{"op": "warm", "inodes": [2], "pin": "yes"}\n',
    b'{"op": "frobnicate"}\n',
    b'{"op": ["status"]}\n',
    b"[" * 100_000 + b"]" * 100_000 + b"\n",  # RecursionError in json.loads
    b'{"op": "check", "inodes": [' + b"[" * 100_000 + b"\n",
    b"[]\n",
    b"not json\n",
    b"\xff\xfe\n",
    b"\n",
    b"",  # a client that says nothing and closes
]


@pytest.mark.parametrize("payload", MALFORMED, ids=lambda p: repr(p[:40]))
async def test_a_malformed_request_is_answered_and_the_server_goes_on(
    server: Server, payload: bytes
) -> None:
    events = await server.ask(payload)
    assert len(events) == 1 and events[0]["event"] == "error", events
    assert events[0]["message"].startswith("bad request: "), events
    (status,) = await server.ask(b'{"op": "status"}\n')
    assert status["event"] == "status"


def test_parse_request_takes_integers_only() -> None:
    request = parse_request(b'{"op": "warm", "inodes": [3, 2, 3], "jobs": 500, "pin": true}')
    assert (request.op, request.inodes, request.jobs, request.pin) == ("warm", (3, 2), 64, True)
    assert parse_request(b'{"op": "check", "inodes": []}').jobs == 12


async def test_a_client_that_hangs_up_mid_warm_ends_only_its_warm(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """The client stops reading (``SHUT_RD``: the server's next send fails with EPIPE, from
    inside the warm's nursery, as an exception group) while the warm is running."""
    caplog.set_level(logging.DEBUG, logger="remotefs.control")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        await sock.connect(os.fsencode(server.path))
        request = {"op": "warm", "inodes": server.inodes, "jobs": 4}
        await sock.send(json.dumps(request).encode() + b"\n")
        received = b""
        while received.count(b'"progress"') < 1:
            received += await sock.recv(1 << 16)
        sock.shutdown(socket.SHUT_RD)
        server.backend.gate.set()  # progress events now follow, and the first send fails
        await server.control.finished.receive()  # that connection is over
    (status,) = await server.ask(b'{"op": "status"}\n')
    assert status["event"] == "status"
    assert "went away" in caplog.text and "failed unexpectedly" not in caplog.text


async def test_a_client_that_closes_at_once_ends_nothing(server: Server) -> None:
    for _ in range(20):
        with trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            await sock.connect(os.fsencode(server.path))
            await sock.send(json.dumps({"op": "warm", "inodes": server.inodes}).encode() + b"\n")
        await server.control.finished.receive()
    server.backend.gate.set()
    events = await server.ask(json.dumps({"op": "warm", "inodes": server.inodes}).encode() + b"\n")
    assert events[-1] == {"event": "done"}
    assert sum(e["event"] == "file" and e["ok"] for e in events) == len(server.inodes)


async def test_a_disk_that_fails_is_an_answer_not_a_crash(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(server.cache.disk, "pin", broken)
    monkeypatch.setattr(server.cache.disk, "drop_file", broken)
    request = {"op": "warm", "inodes": server.inodes[:1], "pin": True}
    (error,) = await server.ask(json.dumps(request).encode() + b"\n")
    assert error["event"] == "error" and "No space left on device" in error["message"]
    assert server.backend.fetched == 0  # nothing fetched
    request = {"op": "evict", "inodes": server.inodes[:1]}
    events = await server.ask(json.dumps(request).encode() + b"\n")
    assert events[0]["event"] == "file" and not events[0]["ok"]
    assert "No space left on device" in events[0]["error"]
    assert events[1:] == [{"event": "done"}]
    assert server.invalidated == []  # nothing was evicted


async def test_pins_are_counted_in_slots(server: Server) -> None:
    """32 slots may be pinned (half of 64): three 8 MiB files fit (24), but not with 9 more
    files of one byte each (9 slots: each takes a whole slot on disk)."""
    small = [RemoteEntry(f"s{i}", f"s{i}", False, size=1, version="v1") for i in range(9)]
    await server.cache.pin(small)
    request = {"op": "warm", "inodes": server.inodes, "pin": True}
    (error,) = await server.ask(json.dumps(request).encode() + b"\n")
    assert error["event"] == "error"
    assert (
        "would pin 33.0 MiB" in error["message"] and "than the 32.0 MiB allowed" in error["message"]
    )
    assert server.backend.fetched == 0 and not any(server.cache.pinned(f) for f in FILES)
    events = await server.ask(json.dumps({"op": "evict", "inodes": server.inodes}).encode() + b"\n")
    assert events[-1] == {"event": "done"} and server.invalidated == server.inodes
    (status,) = await server.ask(b'{"op": "status"}\n')
    assert status["pins"] == {
        "files": 9,
        "bytes": 9,
        "slot_bytes": 9 * CHUNK_SIZE,
        "limit_bytes": 32 * CHUNK_SIZE,
    }


def test_the_socket_goes_to_the_runtime_dir_when_the_cache_path_is_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = Path(f"/tmp/rt{os.getpid()}")
    runtime.mkdir(mode=0o700)
    try:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        short = tmp_path / "c"
        assert socket_path(short) == short / "control.sock"
        long = tmp_path / ("c" * MAX_SOCKET_PATH)
        path = socket_path(long)
        assert path is not None and path.parent == runtime / "remotefs"
        assert (runtime / "remotefs").stat().st_mode & 0o777 == 0o700
        assert socket_path(long) == path  # the same each time
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime / "gone"))  # stale: /tmp's then
        assert socket_path(long) == Path(f"/tmp/remotefs-{os.getuid()}") / path.name
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        # Another user's directory, or one open to others: no socket, one WARNING, no raise.
        os.chmod(runtime / "remotefs", 0o755)
        caplog.set_level(logging.WARNING, logger="remotefs.control")
        assert socket_path(long) is None
        assert "open to other users" in caplog.text and len(caplog.records) == 1
        os.chmod(runtime / "remotefs", 0o700)
        if os.geteuid() == 0:
            os.chown(runtime / "remotefs", 65534, 65534)
            caplog.clear()
            assert socket_path(long) is None
            assert "belongs to uid 65534" in caplog.text and len(caplog.records) == 1
    finally:
        for leftover in (runtime / "remotefs", runtime):
            os.rmdir(leftover)
