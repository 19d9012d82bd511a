"""Issue 5: the mount keeps its promises through faults, rate limits, expiry, crashes and load.

Every test starts its own emulator (its faults must not leak into other tests) and its own
mounts, and stops both in a ``finally``. Timing only bounds how long a test may take; the
assertions are about bytes, errno values, request counts and on-disk sizes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from remotefs.cache.extents import CHUNK_SIZE
from tests.mount.conftest import PROJECT, TOKEN, emulated, mount_args, platform_mount, sb_env
from tests.support.emulator import Emulator, start_emulator
from tests.support.expect import mount_files
from tests.support.fuse import start_mount

BIG = "random-1GiB.bin"


def md5_of(path: Path, limit: int | None = None) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        left = limit
        while chunk := f.read(1 << 20 if left is None else min(1 << 20, left)):
            digest.update(chunk)
            if left is not None:
                left -= len(chunk)
                if left <= 0:
                    break
    return digest.hexdigest()


def statuses(emu: Emulator) -> dict[str, int]:
    return emu.stats()["statuses"]


# --- 1. transient faults ------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["sevenbridges", "genestack"])
def test_transient_faults_leave_every_byte_exact(
    platform: str, demo_tree: Path, tmp_path: Path
) -> None:
    knobs = ("--fail-every", "5", "--drop-every", "7", "--latency-ms", "5")
    with emulated(demo_tree, tmp_path, *knobs) as emu, platform_mount(platform, emu, tmp_path) as m:
        for rel, source in mount_files(demo_tree, platform).items():  # the 1 GiB one too
            assert md5_of(m.path / rel) == source.md5(), rel
        failed = sum(n for key, n in statuses(emu).items() if key.endswith(" 503"))
        assert failed > 10  # the faults did happen, and were absorbed


# --- 2. rate limits ------------------------------------------------------------------------------


def _walk_and_read(root: Path, files: int) -> list[Path]:
    done = subprocess.run(["ls", "-lR", str(root)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.name != BIG)
    return paths[:files]


@pytest.mark.parametrize(("budget", "window"), [(50, 10), (15, 4)])
def test_sb_rate_limit_is_paced_never_hit(
    budget: int, window: int, demo_tree: Path, tmp_path: Path
) -> None:
    knobs = ("--rate-limit", str(budget), "--rate-window", str(window))
    with emulated(demo_tree, tmp_path, *knobs) as emu:
        with platform_mount("sevenbridges", emu, tmp_path, "--timeout", "60") as m:
            expected = mount_files(demo_tree, "sevenbridges")
            for path in _walk_and_read(m.path, 20):
                rel = str(path.relative_to(m.path))
                assert md5_of(path) == expected[rel].md5(), rel
        stats = emu.stats()
    api = stats["total_requests"] - stats["requests"].get("sb.storage", 0)
    if budget < 20:
        assert api > budget  # more than one window's budget was needed
    assert not [key for key in stats["statuses"] if key.endswith(" 429")], stats["statuses"]


def test_odm_429_with_retry_after_is_obeyed(demo_tree: Path, tmp_path: Path) -> None:
    knobs = ("--odm-rate-limit", "100", "--odm-rate-window", "2")
    with emulated(demo_tree, tmp_path, *knobs) as emu:
        with platform_mount("genestack", emu, tmp_path, "--timeout", "60") as m:
            expected = mount_files(demo_tree, "genestack")
            paths = _walk_and_read(m.path / "all", 20)
            for path in paths:
                rel = f"all/{path.name}"
                assert md5_of(path) == expected[rel].md5(), rel
        limited = sum(n for key, n in statuses(emu).items() if key.endswith(" 429"))
    assert limited > 0  # the platform did say "too many", and the mount waited as told


# --- 3. signed-URL expiry and revoked access ----------------------------------------------------


def test_slow_reader_outlives_its_signed_urls(demo_tree: Path, tmp_path: Path) -> None:
    """One 1 MiB read per second for 30 s while URLs live 2 s: no error, exact bytes."""
    expected = mount_files(demo_tree, "sevenbridges")
    rel = next(r for r in expected if r.endswith(BIG))
    with emulated(demo_tree, tmp_path, "--url-lifetime", "2") as emu:
        with platform_mount("sevenbridges", emu, tmp_path) as m:
            fd = os.open(m.path / rel, os.O_RDONLY)
            try:
                start = time.monotonic()
                for i in range(30):
                    offset = i * 7 * CHUNK_SIZE  # spread out: each read needs a fresh fetch
                    assert os.pread(fd, CHUNK_SIZE, offset) == expected[rel].read(
                        offset, CHUNK_SIZE
                    ), i
                    time.sleep(max(0.0, start + i + 1 - time.monotonic()))  # the reader's pace
            finally:
                os.close(fd)
        assert emu.requests("sb.download_info") >= 10  # renewed, over and over


def test_revoked_access_is_eacces_at_once(demo_tree: Path, tmp_path: Path) -> None:
    with emulated(demo_tree, tmp_path) as emu, platform_mount("sevenbridges", emu, tmp_path) as m:
        target = m.path / "bam" / "ex1.bam"
        file_id = os.getxattr(target, "user.remotefs.id").decode()
        emu.configure(revoked=[file_id])
        emu.reset()
        started = time.monotonic()
        with pytest.raises(PermissionError) as info:
            target.read_bytes()
        assert info.value.errno == errno.EACCES
        assert time.monotonic() - started < 10  # no retrying until the deadline
        assert emu.requests("sb.storage") <= 4  # prefetch, demand read, the index: no retries


# --- 4. network loss: no reader stuck, no D state -----------------------------------------------


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4096)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_network_loss_never_leaves_a_reader_stuck(demo_tree: Path, tmp_path: Path) -> None:
    deadline = 5
    expected = mount_files(demo_tree, "sevenbridges")
    rel = next(r for r in expected if r.endswith(BIG))
    with emulated(demo_tree, tmp_path) as emu:  # noqa: SIM117 (the emulator outlives the mount)
        with platform_mount("sevenbridges", emu, tmp_path, "--timeout", str(deadline)) as m:
            head = _head(m.path / rel)
            assert head == expected[rel].read(0, 4096)
            emu.kill()
            code = (
                "import os,sys\n"
                "fd=os.open(sys.argv[1],os.O_RDONLY)\n"
                "try:\n os.pread(fd,1<<20,700<<20); sys.exit(0)\n"
                "except OSError as e:\n sys.exit(e.errno)\n"
            )
            readers = [
                subprocess.Popen([sys.executable, "-c", code, str(m.path / rel)]) for _ in range(4)
            ]
            try:
                codes = [r.wait(timeout=deadline + 20) for r in readers]
            finally:
                for r in readers:
                    if r.poll() is None:
                        r.kill()
            assert codes == [errno.EIO] * 4
            for r in readers:  # gone, not lingering in uninterruptible sleep
                assert not os.path.exists(f"/proc/{r.pid}") or _state(r.pid) != "D"
            assert _head(m.path / rel) == head  # cached bytes still served
            assert "bam" in os.listdir(m.path)  # a cached folder still lists
            assert _state(m.pid) != "D"


# --- 5. crash safety -------------------------------------------------------------------------


def test_kill_9_then_mount_again_and_damaged_blocks_are_refetched(
    demo_tree: Path, tmp_path: Path
) -> None:
    expected = mount_files(demo_tree, "sevenbridges")
    rel = next(r for r in expected if r.endswith(BIG))
    bam = "bam/ex1.bam"
    with emulated(demo_tree, tmp_path) as emu:
        env = sb_env(emu)
        args = mount_args("sevenbridges", emu, tmp_path / "cache")
        clean = start_mount(tmp_path / "m", args, env, tmp_path / "m0.log")
        try:
            (clean.path / bam).read_bytes()  # cached on disk by a clean unmount
            assert clean.unmount() == 0
        finally:
            clean.cleanup()
        first = start_mount(tmp_path / "m", args, env, tmp_path / "m1.log")
        readers: list[subprocess.Popen[bytes]] = []
        try:
            readers = [
                subprocess.Popen(
                    ["dd", f"if={first.path / rel}", "of=/dev/null", "bs=1M", f"skip={i * 200}"],
                    stderr=subprocess.DEVNULL,
                )
                for i in range(4)
            ]
            os.kill(first.pid, signal.SIGKILL)
            first.proc.wait(timeout=10)
            for r in readers:
                assert r.wait(timeout=30) != 0  # the readers fail, they do not hang
        finally:
            for r in readers:
                if r.poll() is None:
                    r.kill()
        # Damage the start of every cached block: the next mount must notice, and fetch again.
        blocks = next((tmp_path / "cache").glob("*/blocks"))
        with open(blocks, "r+b") as f:
            for offset in range(0, os.path.getsize(blocks), CHUNK_SIZE):
                f.seek(offset)
                f.write(b"\xff" * 64)
        emu.reset()
        second = start_mount(tmp_path / "m", args, env, tmp_path / "m2.log")
        try:
            data = (second.path / bam).read_bytes()
            assert hashlib.md5(data).hexdigest() == expected[bam].md5()
            assert emu.requests("sb.storage") > 0  # refetched, not served from the damage
            assert "failed its checksum" in (tmp_path / "m2.log").read_text()
            assert "stale mount" in (tmp_path / "m2.log").read_text()
            assert second.unmount() == 0
        finally:
            second.cleanup()
            first.cleanup()


def test_stale_mount_left_by_kill_9_is_cleaned_with_a_message(
    demo_tree: Path, tmp_path: Path
) -> None:
    with emulated(demo_tree, tmp_path) as emu:
        env = sb_env(emu)
        args = mount_args("sevenbridges", emu, tmp_path / "cache")
        first = start_mount(tmp_path / "m", args, env, tmp_path / "m1.log")
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(timeout=10)
        try:
            with pytest.raises(OSError) as info:
                os.listdir(first.path)
            assert info.value.errno == errno.ENOTCONN  # what the anchors' users see
            second = start_mount(tmp_path / "m", args, env, tmp_path / "m2.log")
            try:
                assert "bam" in os.listdir(second.path)
                assert "stale mount" in (tmp_path / "m2.log").read_text()
                assert second.unmount() == 0
            finally:
                second.cleanup()
        finally:
            first.cleanup()


# --- 6. bounded cache ---------------------------------------------------------------------------


def _du(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def test_cache_directory_stays_under_its_limit(demo_tree: Path, tmp_path: Path) -> None:
    limit = 64 << 20
    expected = mount_files(demo_tree, "sevenbridges")
    rel = next(r for r in expected if r.endswith(BIG))
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(_du(tmp_path / "m-cache"))
            stop.wait(0.05)

    with emulated(demo_tree, tmp_path) as emu:  # noqa: SIM117 (the emulator outlives the mount)
        with platform_mount("sevenbridges", emu, tmp_path, "--cache-size", "64M") as m:
            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                assert md5_of(m.path / rel) == expected[rel].md5()
            finally:
                stop.set()
                sampler.join()
            samples.append(_du(tmp_path / "m-cache"))
    assert len(samples) > 10
    assert max(samples) <= limit + CHUNK_SIZE, max(samples)


# --- 7. load --------------------------------------------------------------------------------------

LOAD_SECONDS = float(os.environ.get("REMOTEFS_LOAD_SECONDS", "60"))


def test_load_16_streams_and_16_random_threads(demo_tree: Path, tmp_path: Path) -> None:
    expected = mount_files(demo_tree, "sevenbridges")
    big = next(r for r in expected if r.endswith(BIG))
    files = sorted((r for r in expected if r != big), key=lambda r: -expected[r].size)[:16]
    errors: list[str] = []
    peak_rss = 0
    with emulated(demo_tree, tmp_path, "--latency-ms", "2") as emu:  # noqa: SIM117 (the emulator outlives the mount)
        with platform_mount("sevenbridges", emu, tmp_path) as m:
            stop_at = time.monotonic() + LOAD_SECONDS
            streams = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        "import hashlib,sys,time\n"
                        "end=float(sys.argv[2]); n=0\n"
                        "while time.monotonic()<end or n==0:\n"
                        " print(hashlib.md5(open(sys.argv[1],'rb').read()).hexdigest(),"
                        "flush=True); n+=1\n",
                        str(m.path / rel),
                        str(stop_at),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for rel in files
            ]

            def random_reader(seed: int) -> None:
                rng = random.Random(seed)
                source = expected[big]
                fd = os.open(m.path / big, os.O_RDONLY)
                try:
                    while time.monotonic() < stop_at:
                        offset = rng.randrange(source.size)
                        length = rng.randrange(1, 256 << 10)
                        want = source.read(offset, min(length, source.size - offset))
                        if os.pread(fd, length, offset) != want:
                            errors.append(f"random read {offset}+{length} differs")
                except OSError as exc:
                    errors.append(f"random reader: {exc}")
                finally:
                    os.close(fd)

            threads = [threading.Thread(target=random_reader, args=(s,)) for s in range(16)]
            for t in threads:
                t.start()
            try:
                while any(t.is_alive() for t in threads):
                    peak_rss = max(peak_rss, _rss(m.pid))
                    time.sleep(0.25)
                outputs = [s.communicate(timeout=LOAD_SECONDS + 120)[0] for s in streams]
            finally:
                for s in streams:
                    if s.poll() is None:
                        s.kill()
                for t in threads:
                    t.join()
            for rel, stream, out in zip(files, streams, outputs, strict=True):
                assert stream.returncode == 0, rel
                digests = out.split()
                assert digests and set(digests) == {expected[rel].md5()}, rel
    assert errors == []
    assert peak_rss < 400 << 20, peak_rss


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# --- 10. access and secrets ------------------------------------------------------------------


def test_private_by_default_and_cache_dir_private(demo_tree: Path, tmp_path: Path) -> None:
    with emulated(demo_tree, tmp_path) as emu, platform_mount("sevenbridges", emu, tmp_path) as m:
        options = next(
            line.split()[3]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1] == str(m.path)
        )
        assert "allow_other" not in options and "ro" in options.split(",")
        assert os.stat(m.path / "bam").st_mode & 0o7777 == 0o555
        assert os.stat(m.path / "bam" / "ex1.bam").st_mode & 0o7777 == 0o444
        (m.path / "bam" / "ex1.bam").read_bytes()
        cache = tmp_path / "m-cache"
        assert cache.stat().st_mode & 0o777 == 0o700
        assert all(p.stat().st_mode & 0o077 == 0 for p in cache.iterdir())
    for path in cache.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


# --- 8. hostile names and metadata -----------------------------------------------------------

HOSTILE = {
    "slash": "a/b.txt",
    "nul": "x\0y.txt",
    "dot": ".",
    "dotdot": "..",
    "long": "n" * 300 + ".bam",
    "dup1": "dup.txt",
    "dup2": "dup.txt",
    "nfc": "caf\u00e9.txt",
    "nfd": "cafe\u0301.txt",
    "junk": "ctl\x01\x7f\u202e.txt",
}


@pytest.mark.parametrize("platform", ["sevenbridges", "genestack"])
def test_hostile_names_and_metadata(platform: str, tmp_path: Path) -> None:
    import json

    from remotefs.fs.names import posix_names

    data = tmp_path / "data"
    (data / "d").mkdir(parents=True)
    for key, name in HOSTILE.items():
        (data / "d" / key).write_bytes(key.encode() * 100)
        meta = {"remotefs:name": name, "note": "x" * (1 << 20), "junk": "\x00\x01\ud800\ufffe"}
        (data / "d" / f"{key}.meta.json").write_text(json.dumps(meta))
    emu = start_emulator(
        ["--data", str(data), "--project", PROJECT], tmp_path / "emu.log", (TOKEN,)
    )
    try:
        with platform_mount(platform, emu, tmp_path) as m:
            folder = m.path / ("d" if platform == "sevenbridges" else "all")
            names = os.listdir(folder)
            assert len(names) == len(HOSTILE) == len(set(names))
            ids = {n: os.getxattr(folder / n, "user.remotefs.id").decode() for n in names}
            originals = {
                n: os.getxattr(folder / n, "user.remotefs.name").decode("utf-8", "surrogateescape")
                for n in names
            }
            assert sorted(originals.values()) == sorted(HOSTILE.values())
            # exactly the documented mapping (remotefs.fs.names), decided per directory
            mapped = posix_names([(ids[n], originals[n]) for n in names])
            assert sorted(os.fsencode(n) for n in names) == sorted(mapped)
            assert "a\u2215b.txt" in names and "x\u2400y.txt" in names
            assert all(len(os.fsencode(n)) <= 255 and "/" not in n for n in names)
            for n in names:  # every file reads back its own bytes, whatever its name
                key = next(
                    k
                    for k, v in HOSTILE.items()
                    if v == originals[n] and (folder / n).read_bytes() == k.encode() * 100
                )
                assert key
                attrs = os.listxattr(folder / n)
                assert "user.remotefs.id" in attrs
                assert all(len(os.getxattr(folder / n, a)) <= 65536 for a in attrs)
            log = (tmp_path / "m.log").read_text()
            assert "Traceback" not in log and "unexpectedly" not in log, log[-2000:]
    finally:
        emu.stop()
