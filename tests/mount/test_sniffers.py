"""Issue 15: file managers, thumbnailers and indexers get exactly what they read, capped, and
spend at most 4 Seven Bridges API requests a minute; ordinary programs keep their read-ahead.

A "thumbnailer" here is a real process whose executable is named like one (a copy of the
interpreter called ``ffmpegthumbnailer``): the mount knows callers by ``/proc/PID/exe``.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mount.conftest import platform_mount
from tests.support.emulator import Emulator
from tests.support.expect import mount_files
from tests.support.fuse import Mount

BIG = "big/random-1GiB.bin"
HEAD = 64 << 10

READER = r"""
import errno, os, sys
limit, paths = int(sys.argv[1]), sys.argv[2:]
failed = 0
for path in paths:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.pread(fd, limit, 0)
        finally:
            os.close(fd)
    except OSError as exc:
        failed += 1
print(failed)
"""


def program(tmp_path: Path, name: str) -> Path:
    """The interpreter under another name, as ``/proc/PID/exe`` will show it."""
    copy = tmp_path / name
    copy.write_bytes(Path(os.path.realpath(sys.executable)).read_bytes())
    copy.chmod(0o755)
    return copy


def read_heads(exe: Path | str, nbytes: int, paths: list[Path]) -> int:
    """Read the first ``nbytes`` of each path in a process running ``exe``; the failures."""
    done = subprocess.run(
        [str(exe), "-c", READER, str(nbytes), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.parametrize("platform", ["sevenbridges", "genestack"])
def test_a_thumbnailer_gets_exact_ranges_and_little_api_budget(
    platform: str, demo_emulator: Emulator, demo_tree: Path, tmp_path: Path
) -> None:
    files = mount_files(demo_tree, platform)
    many = sorted(rel for rel in files if "/many/" in f"/{rel}" or rel.startswith("all/file-"))
    big = BIG if platform == "sevenbridges" else "all/random-1GiB.bin"
    thumbnailer = program(tmp_path, "ffmpegthumbnailer")
    with platform_mount(platform, demo_emulator, tmp_path) as m:
        folder = m.path / ("many" if platform == "sevenbridges" else "all")
        names = os.listdir(folder)  # the listing: what a file manager needs anyway
        targets = [m.path / rel for rel in many] + [m.path / big]
        assert len(targets) >= 250 and len(names) >= 250
        demo_emulator.reset()
        failed = read_heads(thumbnailer, HEAD, targets)
        stats = demo_emulator.stats()
        fetched = sum(stats["bytes"].get(r, 0) for r in ("sb.storage", "odm.download"))
        assert fetched <= 2_000_000, fetched
        if platform == "sevenbridges":
            # No signed URL is known yet: sniffers together get 4 a minute, the rest EIO.
            assert stats["requests"].get("sb.download_info", 0) <= 4
            assert failed >= len(targets) - 4
        else:
            assert failed == 0  # ODM downloads cost no budget: exact ranges, and no more
            assert stats["requests"].get("odm.download", 0) <= len(targets)
            # Past its cap (1 MiB fetched per file) a thumbnailer gets EIO, never short bytes.
            code = (
                "import os,sys; fd=os.open(sys.argv[1],os.O_RDONLY); n=0\n"
                "while True:\n"
                " try: got=os.pread(fd,128<<10,(8<<20)+n)\n"
                " except OSError as e: print(n, e.errno); break\n"
                " assert len(got)==128<<10; n+=len(got)"
            )
            done = subprocess.run(
                [str(thumbnailer), "-c", code, str(m.path / big)],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            read, number = map(int, done.stdout.split())
            assert number == errno.EIO and HEAD + read <= 1 << 20 < HEAD + read + (128 << 10)

        # An ordinary process reading the same head still gets the mount's read-ahead.
        demo_emulator.reset()
        with open(m.path / big, "rb") as f:
            read = 0
            while read < (4 << 20):
                read += len(f.read(1 << 20))
        stats = demo_emulator.stats()
        fetched = sum(stats["bytes"].get(r, 0) for r in ("sb.storage", "odm.download"))
        assert fetched > read, (fetched, read)  # the window ahead of the reader


def test_a_thumbnailer_reads_what_is_cached_for_free(
    demo_emulator: Emulator, demo_tree: Path, tmp_path: Path
) -> None:
    """Bytes an ordinary reader brought in are served to a sniffer (cached bytes are free),
    and on SB a sniffer reads on once an ordinary reader has a signed URL."""
    thumbnailer = program(tmp_path, "tumblerd")
    source = mount_files(demo_tree, "sevenbridges")["bam/ex1.bam"]
    with platform_mount("sevenbridges", demo_emulator, tmp_path) as m:
        target = m.path / "bam" / "ex1.bam"
        assert target.read_bytes()[:HEAD] == source.read(0, HEAD)  # an ordinary reader
        demo_emulator.reset()
        code = (
            "import os,sys; fd=os.open(sys.argv[1],os.O_RDONLY);"
            "sys.stdout.buffer.write(os.pread(fd,65536,0))"
        )
        done = subprocess.run(
            [str(thumbnailer), "-c", code, str(target)], capture_output=True, timeout=60
        )
        assert done.returncode == 0 and done.stdout == source.read(0, HEAD)
        assert demo_emulator.stats()["total_requests"] == 0


def reads_answered(mount: Mount) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "remotefs", "status", "--json", str(mount.path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)["reads"])


def test_a_sniffer_leaves_other_readers_pages_cached(
    demo_emulator: Emulator, demo_tree: Path, tmp_path: Path
) -> None:
    """A sniffer's direct-I/O open keeps the kernel's page cache of the file: an ordinary
    reader's next read of it is answered by the kernel, not fetched through the mount."""
    thumbnailer = program(tmp_path, "tumblerd")
    expected = mount_files(demo_tree, "sevenbridges")["bam/ex1.bam"].read()
    with platform_mount("sevenbridges", demo_emulator, tmp_path) as m:
        target = m.path / "bam" / "ex1.bam"
        assert target.read_bytes() == expected
        reads = reads_answered(m)
        assert read_heads(thumbnailer, 4096, [target]) == 0  # cached bytes: free
        assert reads_answered(m) == reads + 1  # direct I/O: the one read it made
        assert target.read_bytes() == expected
        assert reads_answered(m) == reads + 1  # the page cache held the file still
