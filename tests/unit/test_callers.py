"""Sniffers known by program name, and what they may cost (remotefs.fs.callers,
remotefs.cache.reader.SnifferLimit)."""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
from pathlib import Path

import pytest

from remotefs.cache.reader import SnifferLimit
from remotefs.config import DEFAULT_SNIFFERS
from remotefs.errors import Withheld
from remotefs.fs.callers import Callers, program_name
from remotefs.model import RemoteEntry


@pytest.mark.parametrize(
    "name",
    ["pcmanfm", "nautilus", "Thunar", "dolphin", "gdk-pixbuf-thumbnailer", "tumblerd",
     "tracker-miner-fs-3", "tracker-extract-3", "localsearch-3", "baloo_file",
     "updatedb.plocate", "file"],
)  # fmt: skip
def test_default_sniffers(name: str) -> None:
    assert Callers(DEFAULT_SNIFFERS).matches(name)


@pytest.mark.parametrize("name", ["samtools", "python3.11", "cat", "rsync", "", "filex"])
def test_ordinary_programs(name: str) -> None:
    assert not Callers(DEFAULT_SNIFFERS).matches(name)


def test_a_process_is_known_by_its_executable(tmp_path: Path) -> None:
    """``/proc/PID/exe`` resolves symlinks: a copy of the interpreter named like a
    thumbnailer is one (as the real program would be), a symlink is not."""
    fake = tmp_path / "ffmpegthumbnailer"
    fake.write_bytes(Path(os.path.realpath(sys.executable)).read_bytes())
    fake.chmod(0o755)
    child = subprocess.Popen(
        [str(fake), "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        assert program_name(child.pid) == "ffmpegthumbnailer"
        assert Callers(DEFAULT_SNIFFERS).is_sniffer(child.pid)
        assert not Callers(()).is_sniffer(child.pid)
    finally:
        child.communicate(b"")
    assert not Callers(DEFAULT_SNIFFERS).is_sniffer(os.getpid())
    assert program_name(2**22 + 7) == ""  # gone


async def test_the_sniffer_limit_counts_bytes_per_file_and_api_per_minute(
    autojump_clock: object,
) -> None:
    import trio

    known = {"a"}  # files whose bytes cost no API request (SB: a signed URL is known)
    limit = SnifferLimit(1000, lambda entry: entry.id in known, api_per_minute=2)
    a = RemoteEntry("a", "a.bam", False, size=10**6)
    limit.allow(a, 600)
    limit.allow(a, 400)
    with pytest.raises(Withheld, match="past the 1000 bytes"):
        limit.allow(a, 1)
    for name in ("b", "c"):
        limit.allow(RemoteEntry(name, f"{name}.bam", False), 10)
        known.add(name)  # the fetch got it a URL
    with pytest.raises(Withheld, match="spent their 2 API requests this minute"):
        limit.allow(RemoteEntry("d", "d.bam", False), 10)
    limit.allow(RemoteEntry("b", "b.bam", False), 10)  # a URL known: no API request
    await trio.sleep(60)
    limit.allow(RemoteEntry("d", "d.bam", False), 10)  # a new minute


@pytest.mark.parametrize("name", ["c++filt", "a.b", "ab", "a+b", "[x]", "x", "XY", "tool-2", ""])
def test_the_compiled_patterns_match_as_fnmatchcase(name: str) -> None:
    patterns = ("c++*", "a.b", "a?b", "[[]x]", "X*", "tool-[0-9]", *DEFAULT_SNIFFERS)
    expected = bool(name) and any(fnmatch.fnmatchcase(name, p) for p in patterns)
    assert Callers(patterns).matches(name) is expected
