"""The FUSE operations over a real block cache and a fake one-file backend, called directly
(no kernel): what a handle's life does to the fetches it started."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from remotefs.cache.blockcache import BlockCache
from remotefs.cache.extents import CHUNK_SIZE
from remotefs.emulator.content import GeneratedContent
from remotefs.fs.namespace import ROOT_INODE, Namespace
from remotefs.fs.operations import Operations
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
        ops = Operations(Namespace(backend, ttl=60), cache, ttl=60, deadline=30)
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
    assert ops.cache._flights == {}


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
