"""The FUSE operations over a real block cache and a fake one-file backend, called directly
(no kernel): what a handle's life does to the fetches it started."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pyfuse3
import pytest
import trio
import trio.testing

from remotefs.cache.blockcache import BlockCache
from remotefs.cache.extents import CHUNK_SIZE
from remotefs.cache.reader import Reader
from remotefs.emulator.content import GeneratedContent
from remotefs.errors import AccessDenied
from remotefs.fs import operations as operations_module
from remotefs.fs.namespace import ROOT_INODE, Namespace
from remotefs.fs.operations import Operations
from remotefs.metrics import Metrics
from remotefs.model import RemoteEntry

SIZE = 64 * CHUNK_SIZE
CONTENT = GeneratedContent(SIZE, seed=3)
FILE = RemoteEntry("f1", "stream.bin", False, size=SIZE, version="v1")


class OneFile:
    """A backend holding one file; fetches from ``gated_from`` on wait at the gate."""

    xattr_namespace = "t"

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.gated_from = SIZE
        self.waiting: list[int] = []
        self.cancelled: list[int] = []

    def root(self) -> RemoteEntry:
        return RemoteEntry("root", "", True)

    async def list_dir(self, directory: RemoteEntry) -> list[RemoteEntry]:
        return [FILE]

    def queryable(self, directory: RemoteEntry) -> bool:
        return False

    async def read(self, entry: RemoteEntry, offset: int, size: int) -> bytes:
        if offset >= self.gated_from:
            self.waiting.append(offset)
            try:
                await self.gate.wait()
            except trio.Cancelled:
                self.cancelled.append(offset)
                raise
        return CONTENT.read(offset, size)


@pytest.fixture
async def mounted(tmp_path: Path) -> AsyncIterator[tuple[Operations, OneFile]]:
    backend = OneFile()
    async with trio.open_nursery() as nursery:
        cache = BlockCache(
            tmp_path / "cache", size_limit=1 << 30, fetch=backend.read, namespace="t"
        )
        await nursery.start(cache.run)
        names = Namespace(backend, backend.root(), ttl=60, timeout=30)
        ops = Operations(names, Reader(cache), ttl=60, deadline=30)
        yield ops, backend
        backend.gate.set()
        nursery.cancel_scope.cancel()
    cache.close()


async def test_release_cancels_the_handles_read_ahead(
    mounted: tuple[Operations, OneFile],
) -> None:
    """A stream closed early (``zcat f.gz | head``) leaves no read-ahead running."""
    ops, backend = mounted
    backend.gated_from = 2 * CHUNK_SIZE  # what the reader reads arrives; read-ahead waits
    inode = (await ops.lookup(ROOT_INODE, b"stream.bin")).st_ino
    fh = (await ops.open(inode, os.O_RDONLY)).fh
    for offset in (0, CHUNK_SIZE):  # two sequential reads: read-ahead starts
        assert await ops.read(fh, offset, CHUNK_SIZE) == CONTENT.read(offset, CHUNK_SIZE)
    await trio.testing.wait_all_tasks_blocked()
    assert backend.waiting  # the window ahead is being fetched
    await ops.release(fh)
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(backend.cancelled) == sorted(backend.waiting)
    assert ops.reader.cache._flights == {}


async def test_release_leaves_the_read_ahead_another_stream_shares(
    mounted: tuple[Operations, OneFile],
) -> None:
    """Two streams of one file: the second's read-ahead joins the fetches the first started.
    Releasing the first gives up nothing the second still wants, and the second reads on
    from those fetches (before, it fell back to one request per kernel read)."""
    ops, backend = mounted
    backend.gated_from = 2 * CHUNK_SIZE
    inode = (await ops.lookup(ROOT_INODE, b"stream.bin")).st_ino
    first, second = (await ops.open(inode, os.O_RDONLY)).fh, (await ops.open(inode, 0)).fh
    for fh in (first, second):
        for offset in (0, CHUNK_SIZE):
            await ops.read(fh, offset, CHUNK_SIZE)
    await trio.testing.wait_all_tasks_blocked()
    started = list(backend.waiting)
    assert started  # by the first stream; the second's read-ahead wants the same range
    await ops.release(first)
    await trio.testing.wait_all_tasks_blocked()
    assert backend.cancelled == []
    backend.gate.set()
    with trio.fail_after(10):
        got = await ops.read(second, 2 * CHUNK_SIZE, CHUNK_SIZE)
    assert got == CONTENT.read(2 * CHUNK_SIZE, CHUNK_SIZE)
    assert backend.waiting[: len(started)] == started
    assert 2 * CHUNK_SIZE not in backend.waiting[len(started) :]  # not fetched again


async def test_a_cancellation_not_its_own_is_eio_and_cannot_end_the_mount(
    mounted: tuple[Operations, OneFile], caplog: pytest.LogCaptureFixture
) -> None:
    """The bug behind issue 14: a ``Cancelled`` from another task's scope reaching a handler
    would unwind the FUSE loop. The handler answers EIO (and says it is a bug) instead."""
    ops, _ = mounted
    stray: list[BaseException] = []

    async def capture() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled as exc:
            stray.append(exc)
            raise

    with trio.CancelScope() as other:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(capture)
            await trio.testing.wait_all_tasks_blocked()
            other.cancel()

    ops.ns.node = lambda inode: (_ for _ in ()).throw(stray[0])  # type: ignore[method-assign]
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.getattr(ROOT_INODE)
    assert info.value.errno == errno.EIO
    assert "not its own" in caplog.text
    # ...while the mount's own shutdown (the handler's task cancelled) still passes through.
    with trio.CancelScope() as shutting_down:
        shutting_down.cancel()
        await ops.getattr(ROOT_INODE)
    assert shutting_down.cancelled_caught


async def test_every_errno_comes_from_the_table(mounted: tuple[Operations, OneFile]) -> None:
    ops, _ = mounted
    inode = (await ops.lookup(ROOT_INODE, b"stream.bin")).st_ino
    cases = [
        (ops.opendir(inode), errno.ENOTDIR),
        (ops.open(ROOT_INODE, os.O_RDONLY), errno.EISDIR),
        (ops.open(inode, os.O_WRONLY), errno.EROFS),
        (ops.getxattr(inode, b"security.selinux"), errno.EOPNOTSUPP),
        (ops.getxattr(inode, b"user.nope"), errno.ENODATA),
        (ops.lookup(ROOT_INODE, b"missing"), errno.ENOENT),
        (ops.mkdir(ROOT_INODE, b"d", 0o755, None), errno.EROFS),  # type: ignore[arg-type]
    ]
    for call, number in cases:
        with pytest.raises(pyfuse3.FUSEError) as info:
            await call
        assert info.value.errno == number, call


async def test_failures_answered_are_counted_for_status(
    mounted: tuple[Operations, OneFile], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``remotefs status`` shows the errors the mount answered: the platform's, deadlines
    and bugs; not names that are not there, nor what the mount refuses by design."""
    metrics = Metrics()
    monkeypatch.setattr(operations_module, "METRICS", metrics)
    ops, _ = mounted
    inode = (await ops.lookup(ROOT_INODE, b"stream.bin")).st_ino
    for call, number in [
        (ops.lookup(ROOT_INODE, b"stream.bin.csi"), errno.ENOENT),  # htslib's probe
        (ops.getxattr(inode, b"user.nope"), errno.ENODATA),
        (ops.open(inode, os.O_WRONLY), errno.EROFS),
    ]:
        with pytest.raises(pyfuse3.FUSEError) as info:
            await call
        assert info.value.errno == number
    assert (metrics.errors_answered, metrics.last_error) == (0, "")

    async def denied(entry: RemoteEntry, offset: int, size: int) -> bytes:
        raise AccessDenied("GET https://storage.test/f1: HTTP 403")

    ops.reader.cache.fetch = denied
    fh = (await ops.open(inode, os.O_RDONLY)).fh
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.read(fh, 0, 4096)
    assert info.value.errno == errno.EACCES
    assert metrics.errors_answered == 1
    assert metrics.last_error == "read: GET https://storage.test/f1: HTTP 403 (EACCES)"
    ops.ns.node = lambda inode: 1 / 0  # type: ignore[assignment, method-assign, misc]
    with pytest.raises(pyfuse3.FUSEError) as info:
        await ops.getattr(ROOT_INODE)
    assert info.value.errno == errno.EIO and metrics.errors_answered == 2
    assert metrics.last_error.startswith("getattr: failed unexpectedly: ZeroDivisionError")
