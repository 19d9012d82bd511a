"""The disk tier: slots bounded by the size limit, LRU reuse, persistence, damage detection."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remotefs.cache import store as store_module
from remotefs.cache.extents import CHUNK_SIZE, Extents
from remotefs.cache.store import (
    PIECE,
    CacheDirError,
    ChunkStore,
    DamagedChunk,
    PinsTooLarge,
    decode_header,
    encode_header,
    pieces_of,
)

SOURCE = os.urandom(3 * CHUNK_SIZE)


def chunk(n: int, *runs: tuple[int, int]) -> Extents:
    e = Extents()
    for start, end in runs or [(0, CHUNK_SIZE)]:
        e.add(start, SOURCE[n * CHUNK_SIZE + start : n * CHUNK_SIZE + end][: end - start])
    return e


def key(n: int) -> tuple[str, str, str, int]:
    return ("t", "file", "v1", n)


def test_round_trip_and_persistence(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, size_limit=8 * CHUNK_SIZE)
    store.put_many([(key(0), chunk(0)), (key(1), chunk(1, (10, 20), (4096, 8192)))])
    assert store.get(key(0)) == chunk(0)
    store.close()
    store = ChunkStore(tmp_path, size_limit=8 * CHUNK_SIZE)
    assert key(1) in store and key(2) not in store
    assert store.get(key(1)) == chunk(1, (10, 20), (4096, 8192))
    assert store.get(key(2)) is None
    store.close()


def test_the_data_file_never_exceeds_the_limit(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, size_limit=4 * CHUNK_SIZE + 100)
    for n in range(20):
        store.put_many([(("t", "file", "v1", n), chunk(n % 3))])
        assert os.stat(tmp_path / "blocks").st_size <= 4 * CHUNK_SIZE
        assert len(store) <= 4
    # least recently used first out: the last four written remain
    assert [n for n in range(20) if ("t", "file", "v1", n) in store] == [16, 17, 18, 19]
    store.get(("t", "file", "v1", 16))  # used: now the most recent
    store.put_many([(("t", "file", "v1", 99), chunk(0))])
    assert ("t", "file", "v1", 16) in store and ("t", "file", "v1", 17) not in store
    store.close()


def test_a_smaller_limit_on_reopen_forgets_chunks_beyond_it(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, size_limit=6 * CHUNK_SIZE)
    store.put_many([(("t", "f", "v", n), chunk(0)) for n in range(6)])
    store.close()
    store = ChunkStore(tmp_path, size_limit=2 * CHUNK_SIZE)
    assert len(store) == 2 and os.stat(tmp_path / "blocks").st_size <= 2 * CHUNK_SIZE
    assert all(store.get(("t", "f", "v", n)) in (None, chunk(0)) for n in range(6))
    store.close()


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damage_on_disk_is_detected_and_dropped(tmp_path: Path, damage: str) -> None:
    store = ChunkStore(tmp_path, size_limit=4 * CHUNK_SIZE)
    store.put_many([(key(0), chunk(0)), (key(1), chunk(1))])
    store.close()
    blocks = tmp_path / "blocks"
    if damage == "flip":
        with open(blocks, "r+b") as f:
            f.seek(CHUNK_SIZE + 12345)
            byte = f.read(1)
            f.seek(CHUNK_SIZE + 12345)
            f.write(bytes([byte[0] ^ 0xFF]))
    else:
        os.truncate(blocks, CHUNK_SIZE + 100)
    store = ChunkStore(tmp_path, size_limit=4 * CHUNK_SIZE)
    damaged = [n for n in (0, 1) if _damaged(store, n)]
    assert len(damaged) == 1
    assert key(damaged[0]) not in store  # dropped: the next read fetches it again
    store.close()


def _damaged(store: ChunkStore, n: int) -> bool:
    try:
        return store.get(key(n)) != chunk(n)  # intact chunks come back exact
    except DamagedChunk:
        return True


def test_one_mount_per_directory(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, size_limit=CHUNK_SIZE)
    with pytest.raises(CacheDirError, match="in use by another mount"):
        ChunkStore(tmp_path, size_limit=CHUNK_SIZE)
    store.close()
    ChunkStore(tmp_path, size_limit=CHUNK_SIZE).close()


def test_an_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(CacheDirError, match="cache directory .*file/cache"):
        ChunkStore(tmp_path / "file" / "cache", size_limit=CHUNK_SIZE)


@settings(max_examples=50)
@given(st.lists(st.tuples(st.integers(0, CHUNK_SIZE - 1), st.integers(1, 1 << 16)), max_size=8))
def test_header_round_trip(adds: list[tuple[int, int]]) -> None:
    e = Extents()
    for start, length in adds:
        e.add(start, SOURCE[start : min(CHUNK_SIZE, start + length)])
    pieces = decode_header(encode_header(pieces_of(e)))
    assert pieces is not None
    assert all(s // PIECE == (s + n - 1) // PIECE for s, n, _ in pieces)  # on the grid
    rebuilt = Extents()
    for start, length, _ in pieces:
        rebuilt.add(start, SOURCE[start : start + length])
    assert rebuilt == e


def test_a_partial_read_checks_only_its_pieces_and_writes_add(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, size_limit=4 * CHUNK_SIZE)
    store.put_many([(key(0), chunk(0, (0, 3 * PIECE)))])
    # damage the third piece: a read of the first piece does not see it, a read of it does
    with open(tmp_path / "blocks", "r+b") as f:
        f.seek(2 * PIECE + 10)
        f.write(b"\0\1\2")
    assert store.get(key(0), 100, 200) == chunk(0, (0, PIECE))
    assert store.holds(key(0), [(5 * PIECE, 6 * PIECE)]) is False
    # a later write of other bytes of the chunk keeps what the disk already held
    store.put_many([(key(0), chunk(0, (5 * PIECE, 6 * PIECE)))])
    assert store.get(key(0), 0, PIECE) == chunk(0, (0, PIECE))
    assert store.holds(key(0), [(5 * PIECE, 5 * PIECE + 1)])
    with pytest.raises(DamagedChunk):
        store.get(key(0), 2 * PIECE, 2 * PIECE + 1)
    assert key(0) not in store
    store.close()


def test_a_slot_reused_while_it_is_read_is_a_miss_not_damage(tmp_path: Path, monkeypatch) -> None:
    # Slots are read outside the store's lock (chunks load in parallel). Here the only slot
    # is given to another chunk between the look-up and the read: the reader must see a
    # miss, and neither chunk may be dropped as damaged.
    store = ChunkStore(tmp_path, size_limit=CHUNK_SIZE)
    store.put_many([(key(0), chunk(0))])
    real_pread = os.pread
    evicted = False

    def pread_after_eviction(fd: int, size: int, offset: int) -> bytes:
        nonlocal evicted
        if not evicted:
            evicted = True
            store.put_many([(key(1), chunk(1))])  # evicts chunk 0, writes chunk 1 in its slot
        return real_pread(fd, size, offset)

    monkeypatch.setattr(store_module.os, "pread", pread_after_eviction)
    assert store.get(key(0)) is None
    monkeypatch.setattr(store_module.os, "pread", real_pread)
    assert key(0) not in store and store.get(key(1)) == chunk(1)
    store.close()


def test_an_index_of_another_checksum_starts_empty(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(store_module, "CHECKSUM", store_module.CRC32)
    store = ChunkStore(tmp_path, size_limit=4 * CHUNK_SIZE)
    store.put_many([(key(0), chunk(0))])
    store.close()
    # An index from before the checksum was recorded (user_version 0) holds CRC-32.
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        db.execute("PRAGMA user_version = 0")
    store = ChunkStore(tmp_path, size_limit=4 * CHUNK_SIZE)
    assert store.get(key(0)) == chunk(0)
    store.close()
    # With CRC-32C the CRC-32 chunks would all fail their checks: gone, not "damaged".
    monkeypatch.setattr(store_module, "CHECKSUM", store_module.CRC32C)
    store = ChunkStore(tmp_path, size_limit=4 * CHUNK_SIZE)
    assert len(store) == 0 and store.get(key(0)) is None
    store.put_many([(key(0), chunk(0))])
    store.close()
    store = ChunkStore(tmp_path, size_limit=4 * CHUNK_SIZE)
    assert store.get(key(0)) == chunk(0)
    store.close()


def test_pinned_chunks_are_never_evicted_and_pins_persist(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, size_limit=4 * CHUNK_SIZE)
    pinned = ChunkStore.file_text("t", "pinned", "v1")
    store.put_many([(("t", "pinned", "v1", 0), chunk(0))])  # held before the pin
    store.pin({pinned: 2 * CHUNK_SIZE})
    store.put_many([(("t", "pinned", "v1", 1), chunk(1))])  # and after it
    for n in range(10):  # fill the rest of the store, over and over
        store.put_many([(("t", "other", "v1", n), chunk(n % 3))])
    assert store.get(("t", "pinned", "v1", 0)) == chunk(0)
    assert store.get(("t", "pinned", "v1", 1)) == chunk(1)
    assert store.slots_used == 4
    store.close()
    store = ChunkStore(tmp_path, size_limit=4 * CHUNK_SIZE)
    assert store.pins() == {pinned: 2 * CHUNK_SIZE}
    assert sorted(store.held_pieces(pinned, 2)) == [0, 1]
    for n in range(10, 14):
        store.put_many([(("t", "other", "v1", n), chunk(0))])
    assert ("t", "pinned", "v1", 1) in store
    assert store.drop_file(pinned, 2) == 2  # evicted and unpinned
    assert store.pins() == {} and store.held_pieces(pinned, 2) == {}
    assert ("t", "pinned", "v1", 0) not in store
    store.close()


def test_held_pieces_say_what_a_file_holds(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path, size_limit=8 * CHUNK_SIZE)
    store.put_many([(key(0), chunk(0, (0, 100))), (key(2), chunk(2))])
    held = store.held_pieces(ChunkStore.file_text("t", "file", "v1"), 3)
    assert set(held) == {0, 2}
    assert sum(length for _, length in held[0]) >= 100
    assert sum(length for _, length in held[2]) == CHUNK_SIZE
    store.close()


def test_pins_are_bounded_in_slots_not_bytes(tmp_path: Path) -> None:
    """Half the slots may be pinned, a file taking a whole slot per MiB begun: 4 files of
    one byte fill the 4 pinnable slots of 8, and a fifth is refused with nothing changed."""
    store = ChunkStore(tmp_path, size_limit=8 * CHUNK_SIZE)
    assert store.pin_slots == 4
    tiny = {ChunkStore.file_text("t", f"tiny{i}", "v1"): 1 for i in range(4)}
    store.pin(tiny)
    assert store.pinned_slots() == 4
    store.pin({next(iter(tiny)): 1})  # pinning a pinned file again takes nothing more
    with pytest.raises(PinsTooLarge) as info:
        store.pin({ChunkStore.file_text("t", "one-more", "v1"): 1})
    assert (info.value.files, info.value.slots, info.value.allowed) == (1, 5, 4)
    with pytest.raises(PinsTooLarge):
        store.pin({ChunkStore.file_text("t", "big", "v1"): CHUNK_SIZE + 1})
    assert store.pins() == tiny
    # The unpinned half stays for everything else: new chunks keep finding a slot.
    for n in range(10):
        store.put_many([(("t", "other", "v1", n), chunk(0))])
    assert ("t", "other", "v1", 9) in store
    store.close()


def test_pins_that_no_longer_fit_are_unpinned_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ChunkStore(tmp_path, size_limit=8 * CHUNK_SIZE)
    first, second = (ChunkStore.file_text("t", name, "v1") for name in ("first", "second"))
    store.pin({first: 2 * CHUNK_SIZE})
    store.pin({second: 2 * CHUNK_SIZE})
    store.put_many([(("t", "second", "v1", 0), chunk(0))])
    store.close()
    caplog.set_level(logging.WARNING)
    store = ChunkStore(tmp_path, size_limit=4 * CHUNK_SIZE)  # 2 pinnable slots now
    assert store.pins() == {first: 2 * CHUNK_SIZE}  # the oldest pin stays
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "1 pinned files no longer fit" in caplog.text
    assert store.get(("t", "second", "v1", 0)) == chunk(0)  # its bytes stay, evictable
    for n in range(4):
        store.put_many([(("t", "other", "v1", n), chunk(1))])
    assert ("t", "second", "v1", 0) not in store
    store.close()
    store = ChunkStore(tmp_path, size_limit=4 * CHUNK_SIZE)
    assert store.pins() == {first: 2 * CHUNK_SIZE}  # and the change persisted
    store.close()
