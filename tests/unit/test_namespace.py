"""The namespace's listings: single-flight without inherited cancellations, stale but served
when a refresh fails, and remembered across mounts (remotefs.fs.namespace).

A fake backend whose ``list_dir`` is scripted; time is trio's ``MockClock`` (autojump), the
interleavings ``wait_all_tasks_blocked``: nothing waits for real time.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from remotefs.cache.records import RecordStore
from remotefs.errors import AccessDenied, DeadlineExceeded, NotFound, Transient
from remotefs.fs.namespace import (
    ROOT_INODE,
    STALE_GRACE,
    WALK_AFTER,
    WALK_AHEAD,
    WALK_IDLE_SECONDS,
    Namespace,
)
from remotefs.model import RemoteEntry

ROOT = RemoteEntry("root", "", True)
TTL = 10.0


def entries(*names: str) -> list[RemoteEntry]:
    return [RemoteEntry(f"id-{n}", n, False, size=len(n), version="1") for n in names]


class Scripted:
    """A backend whose listings come from ``answer`` (entries, an exception, or "hang")."""

    xattr_namespace = "t"

    def __init__(self) -> None:
        self.answer: object = entries("a", "b")
        self.calls = 0
        self.release = trio.Event()

    def queryable(self, directory: RemoteEntry) -> bool:
        return False

    async def list_dir(self, directory: RemoteEntry) -> list[RemoteEntry]:
        self.calls += 1
        if self.answer == "hang":
            await trio.sleep_forever()
        if self.answer == "gate":
            await self.release.wait()
            return entries("a", "b", "gated")
        if isinstance(self.answer, BaseException):
            raise self.answer
        if not isinstance(self.answer, list):
            raise TypeError(self.answer)
        return self.answer


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Namespace, Scripted]]:
    backend = Scripted()
    names = Namespace(backend, ROOT, ttl=TTL, timeout=30)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(names.run)
        yield names, backend
        nursery.cancel_scope.cancel()


def listed(names: Namespace) -> list[bytes]:
    listing = names.cached_listing(ROOT_INODE)
    assert listing is not None
    return list(listing.names)


async def test_a_cancelled_leader_leaves_its_waiter_to_list(
    served: tuple[Namespace, Scripted], autojump_clock: trio.testing.MockClock
) -> None:
    """The issue's reproduction, in memory: ``ls`` (leader, out of time) and ``stat``
    (waiter, with time left) of one folder. The waiter lists, and nothing else breaks."""
    names, backend = served
    backend.answer = "gate"
    outcomes: dict[str, object] = {}

    async def caller(who: str, timeout: float) -> None:
        try:
            with trio.fail_after(timeout):
                outcomes[who] = list((await names.listing(ROOT_INODE)).names)
        except (trio.TooSlowError, DeadlineExceeded):  # both EIO at the FUSE handler
            outcomes[who] = "EIO"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, "ls", 4.0)
        await trio.testing.wait_all_tasks_blocked(cushion=0.0)
        nursery.start_soon(caller, "stat", 100.0)
        while "ls" not in outcomes:
            await trio.sleep(1)
        await trio.testing.wait_all_tasks_blocked(cushion=0.0)
        assert backend.calls == 2  # the waiter took over: a fetch of its own
        backend.release.set()
    assert outcomes == {"ls": "EIO", "stat": [b"a", b"b", b"gated"]}


async def test_an_expired_listing_is_served_when_its_refresh_fails(
    served: tuple[Namespace, Scripted],
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    names, backend = served
    caplog.set_level(logging.INFO, logger="remotefs.fs.namespace")
    await names.listing(ROOT_INODE)
    await trio.sleep(TTL + 1)
    backend.answer = Transient("GET /files: gave up after 10 attempts; last: HTTP 503")
    assert list((await names.listing(ROOT_INODE)).names) == [b"a", b"b"]
    assert list((await names.listing(ROOT_INODE)).names) == [b"a", b"b"]
    warnings = [r for r in caplog.records if "could not be refreshed" in r.getMessage()]
    assert len(warnings) == 1  # once per folder
    backend.answer = entries("a", "b", "c")
    await names.listing(ROOT_INODE)  # starts a refresh in the background; served stale
    await trio.testing.wait_all_tasks_blocked()
    assert listed(names) == [b"a", b"b", b"c"]
    assert "listing refreshed" in caplog.text


async def test_a_refresh_that_hangs_costs_a_caller_the_grace_only(
    served: tuple[Namespace, Scripted], autojump_clock: trio.testing.MockClock
) -> None:
    names, backend = served
    await names.listing(ROOT_INODE)
    await trio.sleep(TTL + 1)
    backend.answer = "hang"
    started = trio.current_time()
    with trio.fail_after(30):
        assert list((await names.listing(ROOT_INODE)).names) == [b"a", b"b"]
    assert trio.current_time() - started == pytest.approx(STALE_GRACE)
    assert backend.calls == 2  # one refresh, in the background, still trying


@pytest.mark.parametrize("answer", [NotFound("folder gone"), AccessDenied("no access")])
async def test_answers_are_not_hidden_behind_a_stale_listing(
    served: tuple[Namespace, Scripted],
    autojump_clock: trio.testing.MockClock,
    answer: Exception,
) -> None:
    names, backend = served
    await names.listing(ROOT_INODE)
    await trio.sleep(TTL + 1)
    backend.answer = answer
    with pytest.raises(type(answer)):
        await names.listing(ROOT_INODE)


async def test_listings_are_recalled_from_the_record_store(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    backend = Scripted()
    wall = [1.8e9]  # the record store's clock (it is read in worker threads)
    for mount in range(3):
        records = RecordStore(tmp_path / "records", user_key="u1", clock=lambda: wall[0])
        names = Namespace(backend, ROOT, ttl=TTL, timeout=30, records=records)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            await nursery.start(records.run)
            await nursery.start(names.run)
            if mount == 2:
                backend.answer = Transient("unreachable")
            assert list((await names.listing(ROOT_INODE)).names) == [b"a", b"b"]
            nursery.cancel_scope.cancel()
        records.close()
        if mount == 0:
            assert backend.calls == 1
        if mount == 1:
            assert backend.calls == 1  # within the TTL: recalled, not fetched
            wall[0] += TTL + 1
    assert backend.calls >= 2  # expired: a refresh was tried, and failed; the old served
    other = RecordStore(tmp_path / "records", user_key="u2")
    try:
        assert other.load_listing("root") is None  # another token sees nothing of it
    finally:
        other.close()


def test_the_record_store_drops_what_it_cannot_read(tmp_path: Path) -> None:
    records = RecordStore(tmp_path / "records", user_key="u1")
    try:
        records.remember_listing("f", entries("x"))
        records.remember_root("", ROOT)
        records.remember_value("GSF1", [12, None, "2024"])
        records.close()
        records = RecordStore(tmp_path / "records", user_key="u1")
        saved = records.load_listing("f")
        assert saved is not None and [e.name for e in saved.entries] == ["x"]
        assert records.load_root("") == ROOT
        assert records.load_values(["GSF1", "GSF2"]) == {"GSF1": [12, None, "2024"]}
        records._cache.set(records._listing_key("f"), b"{not json")
        records._cache.set(records._root_key(""), b'["only", "two"]')
        assert records.load_listing("f") is None and records.load_root("") is None
        assert records._listing_key("f") not in records._cache  # dropped
    finally:
        records.close()


async def test_a_slow_but_healthy_refresh_is_led_by_the_background_once(
    served: tuple[Namespace, Scripted],
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Review finding: the caller must not lead the refresh under its grace (it did, timed
    out, logged a false WARNING, and the listing was fetched twice)."""
    names, backend = served
    await names.listing(ROOT_INODE)
    await trio.sleep(TTL + 1)
    backend.answer = "gate"
    with trio.fail_after(30):
        assert list((await names.listing(ROOT_INODE)).names) == [b"a", b"b"]  # stale, at once
    await trio.sleep(STALE_GRACE * 2)  # the refresh is slower than the grace
    backend.release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert backend.calls == 2  # the first listing, and one refresh: no second round
    assert listed(names) == [b"a", b"b", b"gated"]
    assert "could not be refreshed" not in caplog.text


async def test_a_folder_gone_after_an_outage_is_enoent_not_stale_forever(
    served: tuple[Namespace, Scripted], autojump_clock: trio.testing.MockClock
) -> None:
    names, backend = served
    await names.listing(ROOT_INODE)
    await trio.sleep(TTL + 1)
    backend.answer = Transient("HTTP 503")
    await names.listing(ROOT_INODE)  # stale; the folder is now failing
    backend.answer = NotFound("the folder is gone")
    with pytest.raises(NotFound):  # the refresh heard 404: the old listing is dropped
        await names.listing(ROOT_INODE)
    with pytest.raises(NotFound):
        await names.listing(ROOT_INODE)


async def test_an_unexpected_error_in_a_background_refresh_is_not_fatal(
    served: tuple[Namespace, Scripted],
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    names, backend = served
    await names.listing(ROOT_INODE)
    await trio.sleep(TTL + 1)
    backend.answer = AttributeError("'list' object has no attribute 'get'")  # a parser's bug
    assert list((await names.listing(ROOT_INODE)).names) == [b"a", b"b"]
    await trio.testing.wait_all_tasks_blocked()
    assert "failed unexpectedly" in caplog.text  # logged with its traceback; nursery alive
    backend.answer = entries("a")
    await names.listing(ROOT_INODE)
    await trio.testing.wait_all_tasks_blocked()
    assert listed(names) == [b"a"]


def test_a_record_store_that_cannot_be_opened_costs_only_the_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from remotefs.mount import open_records

    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "cache.db").write_bytes(b"this is not a database" * 100)
    assert open_records(tmp_path / "records", "u1") is None
    assert "cannot be opened" in caplog.text
    healthy = open_records(tmp_path / "fresh", "u1")
    assert healthy is not None
    healthy.close()


# --- sizes the listing did not say (ODM) -------------------------------------------------


class Unsized(Scripted):
    """Listings without sizes; ``sized`` answers a file's size (its name's length) and
    counts, per file, how often it was asked; ``gone`` files are gone."""

    def __init__(self, *names: str) -> None:
        super().__init__()
        self.answer = [
            RemoteEntry(f"id-{n}", n, False, sized=False, record_json=n.encode()) for n in names
        ]
        self.asked: list[str] = []
        self.gone: set[str] = set()
        self.failing: set[str] = set()

    async def sized(self, batch: list[RemoteEntry]) -> list[RemoteEntry | None]:
        out: list[RemoteEntry | None] = []
        for entry in batch:
            if entry.sized:
                out.append(entry)
                continue
            self.asked.append(entry.name)
            await trio.sleep(0.04)
            if entry.name in self.failing:
                raise Transient(f"HEAD of {entry.name}: 503")
            if entry.name in self.gone:
                out.append(None)
            else:
                out.append(
                    RemoteEntry(
                        entry.id,
                        entry.name,
                        False,
                        size=len(entry.name),
                        record_json=entry.record_json,
                    )
                )
        return out


async def test_names_need_no_sizes_a_stat_one_size_and_a_walk_sizes_ahead(
    autojump_clock: trio.testing.MockClock,
) -> None:
    many = [f"f{i:03d}" for i in range(200)]
    backend = Unsized("ccc", "a", "bb", "gone", *many)
    backend.gone.add("gone")
    names = Namespace(backend, ROOT, ttl=TTL, timeout=30)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(names.run)
        listing = await names.listing(ROOT_INODE)
        assert backend.asked == [], "listing asks for no size"
        node = await names.lookup(ROOT_INODE, b"bb")
        assert not node.entry.sized
        assert (await names.sized(node.inode)).entry.size == 2
        await trio.sleep(5)
        assert backend.asked == ["bb"], "one stat, one size"
        # more files of the folder: a walk; sizes are asked for ahead, in name order
        for name in (b"f197", b"f198", b"f199"):  # "bb" was too long ago to count
            await names.sized(listing.by_name[name])
        assert backend.asked == ["bb", "f197", "f198", "f199"]
        assert (await names.sized(listing.by_name[b"a"])).entry.size == 1
        await trio.sleep(WALK_IDLE_SECONDS + 10)  # the walk stops: nothing more is asked
        order = ["ccc", "a", "gone", *many]  # listing order (as ls stats), those unsized
        assert set(backend.asked) == {
            "bb",
            "f197",
            "f198",
            "f199",
            *order[: WALK_AHEAD + 2 * WALK_AFTER],
        }
        ahead = [n for n in backend.asked[4:] if n != "a"]
        assert ahead == [n for n in order if n in ahead]
        gone = listing.by_name[b"gone"]
        with pytest.raises(NotFound, match="gone"):
            await names.sized(gone)
        # a re-listing that says no size does not forget one learned for the same record
        names._listings.clear()
        await names.listing(ROOT_INODE)
        assert names.node(listing.by_name[b"a"]).entry.size == 1
        # a new record (the file changed) whose size is not known yet keeps showing the old
        # size, never 0, until it is sized (a reader may have it open)
        backend.answer = [
            dataclasses.replace(e, record_json=b"changed") if e.name == "a" else e
            for e in backend.answer  # type: ignore[attr-defined]
        ]
        names._listings.clear()
        await names.listing(ROOT_INODE)
        changed = names.node(listing.by_name[b"a"]).entry
        assert not changed.sized and changed.size == 1 and changed.record_json == b"changed"
        names._listings.clear()  # and again, still unsized: still the old size
        await names.listing(ROOT_INODE)
        assert names.node(listing.by_name[b"a"]).entry.size == 1
        nursery.cancel_scope.cancel()


def test_unsized_entries_survive_the_record_codec() -> None:
    from remotefs.cache.records import decode_entry, encode_entry

    unsized = RemoteEntry("id", "n", False, sized=False)
    assert decode_entry(encode_entry(unsized)) == unsized
    sized = RemoteEntry("id", "n", False, size=0)
    assert decode_entry(encode_entry(sized)) == sized
    with pytest.raises(ValueError):
        decode_entry(["id", "d", True, -1, 0, "", "{}", "{}"])


async def test_a_companion_that_cannot_be_sized_fails_only_its_own_lookup(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = Unsized("x.bam", "x.bam.bai")
    backend.failing.add("x.bam.bai")
    names = Namespace(backend, ROOT, ttl=TTL, timeout=30)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(names.run)
        listing = await names.listing(ROOT_INODE)
        bam, bai = listing.by_name[b"x.bam"], listing.by_name[b"x.bam.bai"]
        assert (await names.sized(bam, [bai], folder=ROOT_INODE)).entry.size == 5
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(backend.asked) == ["x.bam", "x.bam.bai"]  # at the same time
        with pytest.raises(Transient):
            await names.sized(bai)
        nursery.cancel_scope.cancel()
