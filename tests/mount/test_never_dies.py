"""Issue 14: the mount never dies. A platform slower than ``--timeout`` with concurrent
readers, a storage stall, a platform that goes away and comes back, a remount while it is
away, and faults planted in the mount process itself.

Every test starts its own emulator (its faults must not leak into other tests) and its own
mounts, and stops both in a ``finally``. Waits are bounded polls of an observable state
(the emulator's arrival counter, the mount's log, a listing); the one plain wait lets a
listing's ``--ttl`` pass, which is the scenario itself.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from remotefs.fs.namespace import STALE_GRACE
from tests.mount.conftest import PROJECT, TOKEN, mount_args, odm_env, platform_mount, sb_env
from tests.support.emulator import Emulator, start_emulator
from tests.support.fuse import Mount, is_mounted, start_mount

TIMEOUT = 4.0
PLANTED = Path(__file__).parent.parent / "support" / "planted"

PROBE = r"""
import os, sys, time
op, path = sys.argv[1], sys.argv[2]
start = time.monotonic()
try:
    if op == "ls":
        os.listdir(path)
    elif op == "stat":
        os.stat(path)
    else:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    code = 0
except OSError as exc:
    code = exc.errno
print(code, time.monotonic() - start, flush=True)
"""


def probe(op: str, path: Path) -> subprocess.Popen[str]:
    """``op`` (ls, stat, cat) of ``path`` in a process of its own: a reader of the mount."""
    return subprocess.Popen(
        [sys.executable, "-c", PROBE, op, str(path)], stdout=subprocess.PIPE, text=True
    )


def outcome(reader: subprocess.Popen[str], limit: float = 60) -> tuple[int, float]:
    """The reader's errno (0: success) and how long its call took."""
    out, _ = reader.communicate(timeout=limit)
    code, seconds = out.split()
    return int(code), float(seconds)


def wait_for(condition: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit:.0f} s: {what}")
        time.sleep(0.05)


def eventually(attempt: Callable[[], bytes | list[str]], limit: float = 10.0) -> bytes | list[str]:
    """``attempt()``'s result once it stops failing with an OSError (bounded): the mount
    answers a moment-old failure again at once (``concurrency.RecentFailures``)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return attempt()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def write_data(root: Path) -> Path:
    (root / "big").mkdir(parents=True)
    for i in range(1, 4):
        (root / "big" / f"f{i}.txt").write_bytes(os.urandom(50_000 + i))
    (root / "reads").mkdir()
    (root / "reads" / "cold.bin").write_bytes(os.urandom(8 << 20))
    (root / "reads" / "small.txt").write_text("small\n")
    (root / "later").mkdir()
    (root / "later" / "unread.bin").write_bytes(os.urandom(300_000))
    return root


@contextmanager
def emulated(data: Path, tmp_path: Path, port: int = 0) -> Iterator[Emulator]:
    emu = start_emulator(
        ["--data", str(data), "--project", PROJECT], tmp_path / "emu.log", (TOKEN,), port=port
    )
    try:
        yield emu
    finally:
        emu.stop()


def folder(platform: str, name: str) -> str:
    """Where a top-level folder of the data shows in the mount."""
    return name if platform == "sevenbridges" else "all"


def in_mount(platform: str, rel: str) -> str:
    return rel if platform == "sevenbridges" else f"all/{rel.rsplit('/', 1)[-1]}"


PLATFORMS = pytest.mark.parametrize("platform", ["sevenbridges", "genestack"])


# --- 1. the reproduction: a platform slower than --timeout, two readers of one folder ----------


@PLATFORMS
def test_concurrent_readers_of_a_stalled_listing_get_eio_and_the_mount_lives(
    platform: str, tmp_path: Path
) -> None:
    data = write_data(tmp_path / "data")
    with emulated(data, tmp_path) as emu:
        with platform_mount(platform, emu, tmp_path, "--timeout", str(TIMEOUT)) as m:
            emu.configure(latency_ms=6000)
            before = emu.stats()["arrived"]
            ls = probe("ls", m.path / folder(platform, "big"))
            wait_for(lambda: emu.stats()["arrived"] > before, "the listing reached the platform")
            stat = probe("stat", m.path / in_mount(platform, "big/f1.txt"))
            for reader in (ls, stat):
                code, seconds = outcome(reader)
                assert code == errno.EIO, errno.errorcode.get(code, code)
                assert seconds <= TIMEOUT + 1, seconds
            assert m.proc.poll() is None, (tmp_path / "m.log").read_text()[-3000:]
            emu.configure(latency_ms=0)
            names = eventually(lambda: os.listdir(m.path / folder(platform, "big")))
            assert {"f1.txt", "f2.txt", "f3.txt"} <= set(names)
            rel = in_mount(platform, "big/f2.txt")
            assert (m.path / rel).read_bytes() == (data / "big" / "f2.txt").read_bytes()
        log = (tmp_path / "m.log").read_text()
    assert "Traceback" not in log, log[-3000:]


@PLATFORMS
def test_eight_readers_of_a_cold_file_during_a_storage_stall(platform: str, tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    rel = in_mount(platform, "reads/cold.bin")
    with emulated(data, tmp_path) as emu:
        with platform_mount(platform, emu, tmp_path, "--timeout", str(TIMEOUT)) as m:
            os.listdir(m.path / folder(platform, "reads"))  # the listing is not what stalls
            emu.configure(stall_every=1, stall_ms=6000)  # every byte answer, halfway
            readers = [probe("cat", m.path / rel) for _ in range(8)]
            for reader in readers:
                code, seconds = outcome(reader)
                assert code == errno.EIO, errno.errorcode.get(code, code)
                assert seconds <= TIMEOUT + 1, seconds
            assert m.proc.poll() is None, (tmp_path / "m.log").read_text()[-3000:]
            emu.configure(stall_every=0)
            got = eventually((m.path / rel).read_bytes)
            assert got == (data / "reads" / "cold.bin").read_bytes()
        log = (tmp_path / "m.log").read_text()
    assert "Traceback" not in log, log[-3000:]


# --- 4. stale but served; remembered across remounts ---------------------------------------------


@PLATFORMS
def test_listings_are_served_stale_while_the_platform_is_gone_and_after_a_remount(
    platform: str, tmp_path: Path
) -> None:
    data = write_data(tmp_path / "data")
    env = sb_env if platform == "sevenbridges" else odm_env
    reads = folder(platform, "reads")
    small = in_mount(platform, "reads/small.txt")
    emu = start_emulator(["--data", str(data), "--project", PROJECT], tmp_path / "e1.log", (TOKEN,))
    port = int(emu.url.rsplit(":", 1)[1])
    args = [*mount_args(platform, emu, tmp_path / "cache"), "--ttl", "1", "--timeout", "5"]
    first: Mount | None = None
    second: Mount | None = None
    try:
        first = start_mount(tmp_path / "m", args, env(emu), tmp_path / "m1.log")
        listed = sorted(os.listdir(first.path / reads))
        assert (first.path / small).read_bytes() == b"small\n"
        emu.stop()
        time.sleep(5)  # the scenario: the listing is 5 s old (--ttl 1) and the platform gone
        started = time.monotonic()
        assert sorted(os.listdir(first.path / reads)) == listed
        # Two stale levels (the root's lookup, the folder's opendir), each at most the
        # stale grace: not the whole deadline.
        assert time.monotonic() - started < 2 * STALE_GRACE + 1
        wait_for(  # said once the background refresh gives up (within --timeout)
            lambda: "could not be refreshed" in (tmp_path / "m1.log").read_text(),
            "the stale WARNING",
            10,
        )
        # It comes back, with one file more: the same mount shows it.
        (data / "reads" / "new.txt").write_text("new\n")
        emu = start_emulator(
            ["--data", str(data), "--project", PROJECT], tmp_path / "e2.log", (TOKEN,), port=port
        )
        new = "new.txt"
        wait_for(lambda: new in os.listdir(first.path / reads), "the refreshed listing")
        assert "listing refreshed" in (tmp_path / "m1.log").read_text()
        assert first.unmount() == 0

        # Remount while the platform is gone: it comes up from what the last mount knew.
        emu.stop()
        second = start_mount(tmp_path / "m", args, env(emu), tmp_path / "m2.log")
        assert "mounting from what the last mount knew" in (tmp_path / "m2.log").read_text()
        assert new in os.listdir(second.path / reads)
        assert (second.path / small).read_bytes() == b"small\n"  # from the block cache
        # The platform returns: everything works without a remount.
        emu = start_emulator(
            ["--data", str(data), "--project", PROJECT], tmp_path / "e3.log", (TOKEN,), port=port
        )
        later = in_mount(platform, "later/unread.bin")
        if platform == "sevenbridges":
            assert "unread.bin" in os.listdir(second.path / "later")  # never listed before
        wait_for(lambda: (second.path / later).exists(), "the never-listed folder", 30)
        assert (second.path / later).read_bytes() == (data / "later" / "unread.bin").read_bytes()
        wait_for(
            lambda: "credentials and target confirmed" in (tmp_path / "m2.log").read_text(),
            "the deferred credentials check",
            60,
        )
        assert second.unmount() == 0
    finally:
        for m in (first, second):
            if m is not None:
                m.cleanup()
        emu.stop()


def test_a_listing_within_ttl_is_not_fetched_again_after_a_remount(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    with emulated(data, tmp_path) as emu:
        args = [*mount_args("sevenbridges", emu, tmp_path / "cache"), "--ttl", "600"]
        for round_ in range(2):
            mount = start_mount(tmp_path / "m", args, sb_env(emu), tmp_path / f"m{round_}.log")
            try:
                assert "f1.txt" in os.listdir(mount.path / "big")
                assert mount.unmount() == 0
            finally:
                mount.cleanup()
            if round_ == 0:
                emu.reset()
        listings = emu.requests("sb.files.list")
    assert listings == 0  # root and big/ both recalled from the record cache


# --- 3/5. faults planted in the mount process: never a silent exit --------------------------------


@pytest.mark.parametrize("plant", ["escape", "silent-end"])
def test_an_unexpected_end_is_critical_and_non_zero(plant: str, tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    with emulated(data, tmp_path) as emu:
        env = {**sb_env(emu), "PYTHONPATH": str(PLANTED), "REMOTEFS_PLANT": plant}
        args = mount_args("sevenbridges", emu, tmp_path / "cache")
        mount = start_mount(tmp_path / "m", args, env, tmp_path / "m.log")
        try:
            assert "big" in os.listdir(mount.path)
            with suppress(OSError):
                os.statvfs(mount.path)  # sets the planted fault off
            assert mount.proc.wait(timeout=30) == 70
            log = (tmp_path / "m.log").read_text()
            assert " CRITICAL " in log and "stopped unexpectedly" in log, log[-3000:]
            assert "Traceback" in log
            assert not is_mounted(mount.path)  # released, not left as a dead mount
        finally:
            mount.cleanup()


def test_a_daemon_mount_logs_its_unexpected_end_in_mount_log(tmp_path: Path) -> None:
    data = write_data(tmp_path / "data")
    mountpoint = tmp_path / "m"
    mountpoint.mkdir()
    cache = tmp_path / "cache"
    with emulated(data, tmp_path) as emu:
        env = {**os.environ, **sb_env(emu), "PYTHONPATH": str(PLANTED), "REMOTEFS_PLANT": "escape"}
        argv = [sys.executable, "-m", "remotefs", "mount", str(mountpoint)]
        try:
            done = subprocess.run(
                [*argv, *mount_args("sevenbridges", emu, cache)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            log = cache / "mount.log"
            pid = int(log.read_text().rsplit("(pid ", 1)[1].split(")", 1)[0])
            with suppress(OSError):
                os.statvfs(mountpoint)
            wait_for(lambda: not os.path.exists(f"/proc/{pid}"), "the daemon's exit")
            text = log.read_text()
            assert " CRITICAL " in text and "stopped unexpectedly" in text, text[-3000:]
        finally:
            if is_mounted(mountpoint):
                subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)


def test_records_hold_no_token(tmp_path: Path) -> None:
    """The record cache (listings, root) is keyed by a hash of the token, never the token."""
    data = write_data(tmp_path / "data")
    with emulated(data, tmp_path) as emu:  # noqa: SIM117
        with platform_mount("sevenbridges", emu, tmp_path, cache=tmp_path / "cache") as m:
            os.listdir(m.path / "big")
    records = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert any("records" in p.parts for p in records)
    for path in records:
        assert TOKEN.encode() not in path.read_bytes(), path
