"""The block cache with a fake platform: exact bytes, single-flight, economy, integrity."""

from __future__ import annotations

import random
import sqlite3
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from remotefs.cache import blockcache
from remotefs.cache.blockcache import BlockCache, ReadAheadGroup
from remotefs.cache.extents import CHUNK_SIZE
from remotefs.cache.prefetch import MAX_WINDOW, REQUEST_SIZE, ReadAhead
from remotefs.cache.reader import SnifferLimit
from remotefs.emulator.content import GeneratedContent
from remotefs.errors import Transient, Withheld
from remotefs.model import RemoteEntry

SIZE = 5 * CHUNK_SIZE + 12345
CONTENT = GeneratedContent(SIZE, seed=9)
ENTRY = RemoteEntry("f1", "f1.bin", False, size=SIZE, version="v1")


class FakePlatform:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.cancelled: list[tuple[int, int]] = []
        self.gate: trio.Event | None = None

    async def fetch(self, entry: RemoteEntry, offset: int, size: int) -> bytes:
        self.calls.append((offset, size))
        if self.gate is not None:
            try:
                await self.gate.wait()
            except trio.Cancelled:
                self.cancelled.append((offset, size))
                raise
        await trio.sleep(0)
        return GeneratedContent(entry.size, seed=9).read(offset, size)

    @property
    def fetched(self) -> int:
        return sum(n for _, n in self.calls)


@pytest.fixture
def platform() -> FakePlatform:
    return FakePlatform()


async def _open(
    tmp_path: Path, platform: FakePlatform, nursery: trio.Nursery, **options: int
) -> BlockCache:
    cache = BlockCache(
        tmp_path / "blocks", size_limit=1 << 30, fetch=platform.fetch, namespace="t", **options
    )
    await nursery.start(cache.run)
    return cache


@pytest.fixture
async def cache(tmp_path: Path, platform: FakePlatform) -> AsyncIterator[BlockCache]:
    async with trio.open_nursery() as nursery:
        c = await _open(tmp_path, platform, nursery)
        yield c
        nursery.cancel_scope.cancel()
    c.close()


async def test_exact_bytes(cache: BlockCache) -> None:
    rng = random.Random(3)
    cases = [(0, 1), (SIZE - 1, 1), (SIZE - 5, 100), (SIZE, 10), (CHUNK_SIZE - 3, 10), (0, SIZE)]
    cases += [(rng.randrange(SIZE), rng.randrange(1, 3 * CHUNK_SIZE)) for _ in range(200)]
    for offset, size in cases:
        assert await cache.read(ENTRY, offset, size) == CONTENT.read(offset, size), (offset, size)


async def test_concurrent_readers_share_one_fetch(
    cache: BlockCache, platform: FakePlatform
) -> None:
    platform.gate = trio.Event()
    results: list[bytes] = []

    async def reader() -> None:
        results.append(await cache.read(ENTRY, 1000, 50_000))

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        platform.gate.set()
    assert results == [CONTENT.read(1000, 50_000)] * 8
    assert platform.calls == [(1000, 50_000)]


async def test_random_reads_fetch_what_they_read(cache: BlockCache, platform: FakePlatform) -> None:
    rng = random.Random(5)
    read = 0
    for _ in range(1000):
        page = rng.randrange(SIZE // 4096) * 4096  # the kernel asks for whole pages
        data = await cache.read(ENTRY, page, 4096)
        read += 4096
        assert data == CONTENT.read(page, 4096)
    assert platform.fetched <= read  # never more than asked; re-reads are free


async def test_sequential_readahead_uses_large_requests(
    cache: BlockCache, platform: FakePlatform
) -> None:
    ra = ReadAhead()
    for offset in range(0, SIZE, 128 << 10):
        for start, end in ra.plan(offset, 128 << 10, SIZE):
            cache.prefetch(ENTRY, start, end)
        assert await cache.read(ENTRY, offset, 128 << 10) == CONTENT.read(offset, 128 << 10)
    assert platform.fetched == SIZE  # every byte once
    assert max(n for _, n in platform.calls) > CHUNK_SIZE  # read-ahead in big pieces
    assert len(platform.calls) < 20


async def test_memory_tier_stays_within_its_bound_while_reading_ahead(
    tmp_path: Path, platform: FakePlatform
) -> None:
    """Read-ahead remembers its chunks empty, then fills them: the bound holds after the
    filling too, and every byte still reads back exactly (evicted chunks wait for the disk
    writer, or are on disk)."""
    bound = 2 * CHUNK_SIZE
    async with trio.open_nursery() as nursery:
        cache = await _open(tmp_path, platform, nursery, memory_bytes=bound)
        cache.prefetch(ENTRY, 0, SIZE)
        assert await cache.read(ENTRY, SIZE - 1, 1) == CONTENT.read(SIZE - 1, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert 0 < cache.memory_in_use <= bound
        assert await cache.read(ENTRY, 0, SIZE) == CONTENT.read(0, SIZE)
        assert cache.memory_in_use <= bound
        nursery.cancel_scope.cancel()
    cache.close()
    assert platform.fetched == SIZE


def _writer_held(cache: BlockCache) -> tuple[threading.Event, list[int]]:
    """Hold the disk writer until the returned event is set; the chunks written, in order."""
    gate, written = threading.Event(), []
    put_many = cache.disk.put_many

    def held_put_many(items: list) -> None:
        gate.wait(10)
        put_many(items)
        written.extend(key[3] for key, _ in items)

    cache.disk.put_many = held_put_many  # type: ignore[method-assign]
    return gate, written


async def test_bytes_not_yet_on_disk_stay_within_their_bound(
    tmp_path: Path, platform: FakePlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the disk writer is behind, a fetch starts only when its bytes fit under
    ``UNWRITTEN_BYTES`` with those fetched and not yet written; the others start as the writer
    makes room, and every byte still arrives exactly, once."""
    monkeypatch.setattr(blockcache, "UNWRITTEN_BYTES", 2 * CHUNK_SIZE)
    monkeypatch.setattr(blockcache, "WRITE_BATCH", 1)
    unwritten_at_start: list[int] = []
    async with trio.open_nursery() as nursery:
        cache = await _open(tmp_path, platform, nursery)
        gate, written = _writer_held(cache)
        fetch = cache.fetch

        async def counted_fetch(entry: RemoteEntry, offset: int, size: int) -> bytes:
            unwritten_at_start.append(len(platform.calls) + 1 - len(written))
            return await fetch(entry, offset, size)

        cache.fetch = counted_fetch
        for chunk in range(5):
            cache.prefetch(ENTRY, chunk * CHUNK_SIZE, (chunk + 1) * CHUNK_SIZE)
        await trio.testing.wait_all_tasks_blocked()
        assert len(platform.calls) == 2  # the bound is full: the other three wait
        gate.set()
        with trio.fail_after(10):
            assert await cache.read(ENTRY, 0, SIZE) == CONTENT.read(0, SIZE)
        nursery.cancel_scope.cancel()
    cache.close()
    assert max(unwritten_at_start) <= 2
    assert sorted(offset for offset, _ in platform.calls) == [
        k * CHUNK_SIZE for k in range(SIZE // CHUNK_SIZE + 1)
    ]


@pytest.fixture
async def held(
    tmp_path: Path, platform: FakePlatform, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[BlockCache, threading.Event]]:
    """A cache that lets one chunk's worth of bytes wait for the disk, and its disk writer,
    held until the event is set."""
    monkeypatch.setattr(blockcache, "UNWRITTEN_BYTES", CHUNK_SIZE)
    async with trio.open_nursery() as nursery:
        cache = await _open(tmp_path, platform, nursery)
        gate, _ = _writer_held(cache)
        yield cache, gate
        gate.set()
        nursery.cancel_scope.cancel()
    cache.close()


async def test_a_read_cancelled_while_waiting_for_room_gives_its_place_back(
    held: tuple[BlockCache, threading.Event], platform: FakePlatform
) -> None:
    cache, gate = held
    assert await cache.read(ENTRY, 0, 10) == CONTENT.read(0, 10)  # fills the bound
    waiting = trio.CancelScope()

    async def read_waiting_for_room() -> None:
        with waiting:
            await cache.read(ENTRY, 3 * CHUNK_SIZE, CHUNK_SIZE)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_waiting_for_room)
        await trio.testing.wait_all_tasks_blocked()
        assert len(platform.calls) == 1  # it waits for room
        waiting.cancel()
    gate.set()
    with trio.fail_after(10):
        got = await cache.read(ENTRY, 4 * CHUNK_SIZE, 100)
    assert got == CONTENT.read(4 * CHUNK_SIZE, 100)
    assert platform.calls == [(0, 10), (4 * CHUNK_SIZE, 100)]


async def test_a_stream_reads_its_window_from_memory(
    tmp_path: Path, platform: FakePlatform
) -> None:
    """A streaming reader's consumed chunks go first: the window's chunks, which arrived
    before the reader got to them, stay in a memory tier smaller than twice the window. (Kept
    as most recently used instead, consumed chunks evicted each next chunk before its read.)
    The disk tier is taken away, so a chunk evicted too early could only be fetched again."""
    async with trio.open_nursery() as nursery:
        cache = await _open(tmp_path, platform, nursery, memory_bytes=3 * CHUNK_SIZE)
        cache._queue_write = lambda key, extents: None  # type: ignore[method-assign]
        for chunk in range(SIZE // CHUNK_SIZE + 1):
            for ahead in (chunk + 1, chunk + 2):  # a window of two chunks
                cache.prefetch(ENTRY, ahead * CHUNK_SIZE, (ahead + 1) * CHUNK_SIZE)
            await trio.testing.wait_all_tasks_blocked()  # the window has arrived
            offset = chunk * CHUNK_SIZE
            got = await cache.read(ENTRY, offset, CHUNK_SIZE, streaming=True)
            assert got == CONTENT.read(offset, CHUNK_SIZE)
        nursery.cancel_scope.cancel()
    cache.close()
    assert platform.fetched == SIZE  # every byte once: nothing evicted before it was read


async def test_a_readers_fetch_goes_before_queued_read_ahead(
    held: tuple[BlockCache, threading.Event], platform: FakePlatform
) -> None:
    cache, gate = held
    for chunk in range(3):
        cache.prefetch(ENTRY, chunk * CHUNK_SIZE, (chunk + 1) * CHUNK_SIZE)
    await trio.testing.wait_all_tasks_blocked()  # one fetched; two wait for room
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await cache.read(ENTRY, 4 * CHUNK_SIZE, 4096))

    with trio.fail_after(10):
        async with trio.open_nursery() as readers:
            readers.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()  # it waits for room too
            gate.set()
    assert got == [CONTENT.read(4 * CHUNK_SIZE, 4096)]
    first, second = (offset // CHUNK_SIZE for offset, _ in platform.calls[:2])
    assert first in (0, 1, 2) and second == 4  # trio starts the read-ahead in any order
    with trio.fail_after(10):
        assert await cache.read(ENTRY, 0, SIZE) == CONTENT.read(0, SIZE)


async def test_a_cancelled_read_ahead_group_fetches_nothing_more(
    held: tuple[BlockCache, threading.Event], platform: FakePlatform
) -> None:
    """Cancelling a group (its handle was released) drops its queued read-ahead and starts
    none later; what the reader then needs is fetched once, by the reader."""
    cache, gate = held
    group = ReadAheadGroup()
    for chunk in range(3):
        cache.prefetch(ENTRY, chunk * CHUNK_SIZE, (chunk + 1) * CHUNK_SIZE, group)
    await trio.testing.wait_all_tasks_blocked()  # one fetched; two wait for room
    assert len(platform.calls) == 1
    group.cancel()
    cache.prefetch(ENTRY, 3 * CHUNK_SIZE, 4 * CHUNK_SIZE, group)
    await trio.testing.wait_all_tasks_blocked()
    assert cache._flights == {}
    assert not cache._waiting and cache._in_flight_bytes == 0  # their room given back
    gate.set()
    with trio.fail_after(10):
        assert await cache.read(ENTRY, 0, SIZE) == CONTENT.read(0, SIZE)
    assert platform.fetched == SIZE  # every byte once: the cancelled ones were never fetched


async def test_a_reader_waiting_for_cancelled_read_ahead_fetches_for_itself(
    cache: BlockCache, platform: FakePlatform
) -> None:
    platform.gate = trio.Event()
    group = ReadAheadGroup()
    cache.prefetch(ENTRY, 0, CHUNK_SIZE, group)
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await cache.read(ENTRY, 100, 1000))

    with trio.fail_after(10):
        async with trio.open_nursery() as readers:
            readers.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()  # the reader waits for the read-ahead
            assert platform.calls == [(0, CHUNK_SIZE)]
            group.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert platform.calls == [(0, CHUNK_SIZE), (100, 1000)]  # its own, exact
            platform.gate.set()
    assert got == [CONTENT.read(100, 1000)]


async def test_a_fetch_cancelled_as_it_is_let_in_gives_the_room_back(
    held: tuple[BlockCache, threading.Event],
) -> None:
    """A group cancelled while its fetch waits for room, and room made for that fetch
    before it runs again (the writer finished in the same tick): the fetch never starts,
    and the room it was given goes back."""
    cache, _ = held
    cache._in_flight_bytes = blockcache.UNWRITTEN_BYTES  # full
    waiting = trio.CancelScope()

    async def fetch_waiting_for_room() -> None:
        with waiting:
            await cache._admit(CHUNK_SIZE, urgent=False)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch_waiting_for_room)
        await trio.testing.wait_all_tasks_blocked()
        assert len(cache._waiting) == 1
        waiting.cancel()  # it will resume with Cancelled ...
        cache._in_flight_bytes = 0
        cache._made_room()  # ... but is let in first
        assert cache._in_flight_bytes == CHUNK_SIZE
    assert cache._in_flight_bytes == 0 and not cache._waiting


async def test_read_ahead_runs_while_any_group_or_open_still_wants_it(
    cache: BlockCache, platform: FakePlatform
) -> None:
    """Two streams of one file share the fetches in flight, and ``open``'s prefetch (no
    group) shares them too: a fetch is given up only when nothing wants it any more."""
    platform.gate = trio.Event()
    first, second = ReadAheadGroup(), ReadAheadGroup()
    cache.prefetch(ENTRY, 0, 2 * CHUNK_SIZE, first)
    cache.prefetch(ENTRY, CHUNK_SIZE, 3 * CHUNK_SIZE, second)  # shares [1, 2) MiB
    cache.prefetch(ENTRY, 0, 1000)  # as open does: wanted for good
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(platform.calls) == [(0, 2 * CHUNK_SIZE), (2 * CHUNK_SIZE, CHUNK_SIZE)]
    first.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert platform.cancelled == []  # the second stream and open still want [0, 2) MiB
    second.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert platform.cancelled == [(2 * CHUNK_SIZE, CHUNK_SIZE)]  # wanted by nothing now
    platform.gate.set()
    with trio.fail_after(10):
        assert await cache.read(ENTRY, 0, 2 * CHUNK_SIZE) == CONTENT.read(0, 2 * CHUNK_SIZE)
    assert len(platform.calls) == 2  # [0, 2) MiB came from the shared fetch


async def test_a_failing_disk_costs_only_the_disk_tier(
    tmp_path: Path, platform: FakePlatform, caplog: pytest.LogCaptureFixture
) -> None:
    """The index refusing a write (disk full) is logged; the writer goes on, reads go on."""
    async with trio.open_nursery() as nursery:
        cache = await _open(tmp_path, platform, nursery)
        put_many, failures = cache.disk.put_many, [sqlite3.OperationalError("disk is full")]

        def put_many_failing_once(items: list) -> None:
            if failures:
                raise failures.pop()
            put_many(items)

        cache.disk.put_many = put_many_failing_once  # type: ignore[method-assign]
        for offset in (0, 2 * CHUNK_SIZE, 4 * CHUNK_SIZE):
            with trio.fail_after(10):
                assert await cache.read(ENTRY, offset, 100) == CONTENT.read(offset, 100)
            await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    cache.close()
    assert not failures
    assert "cannot write the disk cache: disk is full" in caplog.text


def test_readahead_plan_tolerates_reordering_and_resets_on_seek() -> None:
    ra = ReadAhead()
    size = 1 << 30
    assert ra.plan(0, 131072, size) == []  # the first read decides nothing
    plans = [ra.plan(off, 131072, size) for off in (131072, 393216, 262144, 524288)]
    assert any(plans) and ra.window > 0
    for _ in range(1000):
        ra.plan(ra.reached, 131072, size)
    assert ra.window == MAX_WINDOW
    assert ra.streak >= MAX_WINDOW // 2  # the window grows with what was read
    assert ra.plan(700 << 20, 4096, size) == [] and ra.window == 0  # a seek
    assert all(b - a <= REQUEST_SIZE for p in plans for a, b in p)


async def test_disk_tier_survives_reopen_and_rejects_damage(
    tmp_path: Path, platform: FakePlatform
) -> None:
    async with trio.open_nursery() as nursery:
        cache = await _open(tmp_path, platform, nursery)
        await cache.read(ENTRY, 0, 3 * CHUNK_SIZE)
        nursery.cancel_scope.cancel()
    cache.close()  # flushes pending writes
    fetched = platform.fetched
    async with trio.open_nursery() as nursery:
        cache = await _open(tmp_path, platform, nursery)
        assert await cache.read(ENTRY, 10, 2 * CHUNK_SIZE) == CONTENT.read(10, 2 * CHUNK_SIZE)
        assert platform.fetched == fetched  # from disk
        # damage chunk 2 on disk: the next reader must refetch it, not serve it
        slot, _ = cache.disk._index[cache.disk.key_text(("t", "f1", "v1", 2))]
        with open(tmp_path / "blocks" / "blocks", "r+b") as f:
            f.seek(slot * CHUNK_SIZE + 100)
            f.write(b"\0" * 8)
        cache._memory.clear()
        assert await cache.read(ENTRY, 2 * CHUNK_SIZE, 1000) == CONTENT.read(2 * CHUNK_SIZE, 1000)
        assert platform.fetched == fetched + 1000
        nursery.cancel_scope.cancel()
    cache.close()


async def test_version_is_part_of_the_key(cache: BlockCache, platform: FakePlatform) -> None:
    await cache.read(ENTRY, 0, 1000)
    newer = RemoteEntry("f1", "f1.bin", False, size=SIZE, version="v2")
    await cache.read(newer, 0, 1000)
    assert platform.calls == [(0, 1000), (0, 1000)]


async def test_failed_fetch_releases_waiters(cache: BlockCache, platform: FakePlatform) -> None:
    calls = 0
    real = platform.fetch

    async def flaky(entry: RemoteEntry, offset: int, size: int) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("boom")
        return await real(entry, offset, size)

    cache.fetch = flaky
    with pytest.raises(OSError):
        await cache.read(ENTRY, 0, 100)
    assert await cache.read(ENTRY, 0, 100) == CONTENT.read(0, 100)


def test_readahead_after_a_seek_stays_small() -> None:
    """A region query reads ~1 MB after its seek: read-ahead must not fetch tens of MB."""
    ra = ReadAhead()
    size = 400 << 20
    asked = 0
    offset = 200 << 20
    ra.plan(offset, 4096, size)  # the seek
    for step in (36 << 10, 64 << 10, 118 << 10, 131072, 131072, 131072, 131072, 131072):
        offset = ra.reached
        asked += sum(b - a for a, b in ra.plan(offset, step, size))
    assert asked <= 4 << 20


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, SIZE + 100), st.integers(0, 3 * CHUNK_SIZE)),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
)
def test_any_reads_in_any_order_are_exact(reads: list[tuple[int, int]], ahead: bool) -> None:
    """Range/chunk arithmetic: whatever was fetched before, a read returns exactly its bytes
    (``min(size, file size - offset)`` of them), and nothing is fetched twice."""

    async def run() -> None:
        platform = FakePlatform()
        with tempfile.TemporaryDirectory() as tmp:
            async with trio.open_nursery() as nursery:
                cache = await _open(Path(tmp), platform, nursery)
                for offset, size in reads:
                    if ahead:
                        cache.prefetch(ENTRY, offset + size, offset + 2 * size)
                    got = await cache.read(ENTRY, offset, size)
                    assert got == CONTENT.read(offset, max(0, min(size, SIZE - offset)))
                nursery.cancel_scope.cancel()
            cache.close()
        assert platform.fetched <= SIZE  # every byte at most once

    trio.run(run)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, SIZE),
            st.integers(1, 2 * CHUNK_SIZE),
            st.integers(0, 2),
            st.booleans(),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_reads_stay_exact_while_read_ahead_is_cancelled(
    steps: list[tuple[int, int, int, bool]],
) -> None:
    """Readers run concurrently with three streams' read-ahead (sharing fetches), whose
    groups are cancelled at any point, with room for one chunk not yet on disk (so fetches
    queue): every read returns exactly its bytes, and at the end nothing is registered,
    queued or counted as in flight."""

    async def run() -> None:
        platform = FakePlatform()
        with tempfile.TemporaryDirectory() as tmp:
            async with trio.open_nursery() as nursery:
                cache = await _open(Path(tmp), platform, nursery)

                async def read(offset: int, size: int) -> None:
                    got = await cache.read(ENTRY, offset, size)
                    assert got == CONTENT.read(offset, max(0, min(size, SIZE - offset)))

                with trio.fail_after(10):
                    async with trio.open_nursery() as readers:
                        groups = [ReadAheadGroup() for _ in range(3)]
                        for offset, size, stream, cancel in steps:
                            cache.prefetch(ENTRY, offset + size, offset + 3 * size, groups[stream])
                            readers.start_soon(read, offset, size)
                            await trio.sleep(0)
                            if cancel:
                                groups[stream].cancel()
                                groups[stream] = ReadAheadGroup()
                    while cache._flights:  # read-ahead still wanted finishes (or fails)
                        await next(iter(cache._flights.values()))[0].outcome.wait()
                assert not cache._waiting and not cache._urgent
                assert cache._in_flight_bytes == 0
                nursery.cancel_scope.cancel()
            cache.close()

    with pytest.MonkeyPatch.context() as patch:  # (hypothesis reruns: no function fixture)
        patch.setattr(blockcache, "UNWRITTEN_BYTES", CHUNK_SIZE)
        trio.run(run)


async def test_a_waiter_with_time_left_takes_over_a_timed_out_fetch(
    tmp_path: Path, platform: FakePlatform, autojump_clock: trio.testing.MockClock
) -> None:
    """Review finding: the leader's failure for lack of time was answered to its waiter too
    (RecentFailures), so the waiter never took over. Now a reader that waited on a fetch
    that was abandoned leads its own, on its own time."""
    from remotefs.cache.reader import Reader
    from remotefs.errors import DeadlineExceeded

    platform.gate = trio.Event()
    outcomes: dict[str, object] = {}
    async with trio.open_nursery() as nursery:
        cache = await _open(tmp_path, platform, nursery)
        reader = Reader(cache)
        first = reader.open(ENTRY, b"f1.bin", lambda name: None)
        second = reader.open(ENTRY, b"f1.bin", lambda name: None)

        async def read(who: str, handle: object, timeout: float) -> None:
            try:
                with trio.fail_after(timeout):
                    outcomes[who] = await handle.read(0, 4096)  # type: ignore[attr-defined]
            except (DeadlineExceeded, trio.TooSlowError) as exc:
                outcomes[who] = type(exc).__name__

        nursery.start_soon(read, "leader", first, 4.0)
        await trio.testing.wait_all_tasks_blocked(cushion=0.0)
        nursery.start_soon(read, "waiter", second, 30.0)
        while "leader" not in outcomes:
            await trio.sleep(0.5)
        await trio.testing.wait_all_tasks_blocked(cushion=0.0)
        assert len(platform.calls) == 2  # the waiter leads a fetch of its own
        platform.gate.set()
        while "waiter" not in outcomes:
            await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    cache.close()
    assert outcomes == {"leader": "DeadlineExceeded", "waiter": CONTENT.read(0, 4096)}


async def test_a_failed_fetch_gives_its_bytes_back_to_the_sniffer_limit(
    cache: BlockCache, platform: FakePlatform
) -> None:
    """A sniffer may fetch ``per_file`` bytes of a file: a fetch that failed brought none,
    so trying again is not refused, and what did arrive is counted once."""
    limit = SnifferLimit(CHUNK_SIZE, lambda entry: True)
    real, calls = platform.fetch, 0

    async def flaky(entry: RemoteEntry, offset: int, size: int) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Transient("HTTP 503")
        return await real(entry, offset, size)

    cache.fetch = flaky
    with pytest.raises(Transient):
        await cache.read(ENTRY, 0, CHUNK_SIZE, limit=limit)
    assert await cache.read(ENTRY, 0, CHUNK_SIZE, limit=limit) == CONTENT.read(0, CHUNK_SIZE)
    assert await cache.read(ENTRY, 0, CHUNK_SIZE, limit=limit) == CONTENT.read(0, CHUNK_SIZE)
    with pytest.raises(Withheld):  # the whole allowance went to the bytes that arrived
        await cache.read(ENTRY, CHUNK_SIZE, 1, limit=limit)
    assert calls == 2


async def test_the_link_is_measured_from_the_requests_sent(
    tmp_path: Path, platform: FakePlatform, autojump_clock: trio.testing.MockClock
) -> None:
    """Each fetch is timed from being sent to its last byte (the fake takes 1/16 s)."""
    fetch = platform.fetch

    async def slow(entry: RemoteEntry, offset: int, size: int) -> bytes:
        await trio.sleep(0.0625)
        return await fetch(entry, offset, size)

    platform.fetch = slow  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        cache = await _open(tmp_path, platform, nursery)
        assert cache.link.bdp == 0
        await cache.read(ENTRY, 0, 4096)
        assert (cache.link.rtt, cache.link.throughput) == (0.0625, 4096 / 0.0625)
        assert cache.link.bdp == 4096
        nursery.cancel_scope.cancel()
    cache.close()


async def test_a_read_says_when_it_waited_for_bytes_in_flight(
    cache: BlockCache, platform: FakePlatform
) -> None:
    waits: list[int] = []
    platform.gate = trio.Event()
    cache.prefetch(ENTRY, 0, CHUNK_SIZE)  # read-ahead in flight
    async with trio.open_nursery() as nursery:

        async def read() -> None:
            await cache.read(ENTRY, 0, 4096, waited=lambda: waits.append(0))

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        platform.gate.set()
    assert waits == [0]
    await cache.read(ENTRY, 4096, 4096, waited=lambda: waits.append(1))  # held: no wait
    await cache.read(ENTRY, 3 * CHUNK_SIZE, 4096, waited=lambda: waits.append(2))  # its own
    assert waits == [0]
    assert platform.calls == [(0, CHUNK_SIZE), (3 * CHUNK_SIZE, 4096)]
