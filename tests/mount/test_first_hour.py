"""Issue 15, the first hour: what a new user meets, each mistake a clear line.

(``--token-file`` for Seven Bridges, the "neither … nor" message: tests/unit/test_credentials.py;
the demo's token and h5py: tests/mount/test_demo_command.py; the fstab options:
tests/unit/test_fstab.py and tests/mount/test_install.py.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT, TOKEN
from tests.support.emulator import Emulator
from tests.support.fuse import is_mounted, start_mount

REMOTEFS = [sys.executable, "-m", "remotefs"]


def remotefs(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [*REMOTEFS, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def sb(emulator_url: str, mountpoint: Path, cache: Path, *extra: str) -> list[str | Path]:
    return ["mount", mountpoint, "--platform", "sevenbridges", "--api-url", emulator_url,
            "--project", PROJECT, "--cache-dir", cache, *extra]  # fmt: skip


def test_an_sb_url_without_v2_says_so(emulator: Emulator, tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    done = remotefs(*sb(emulator.url, tmp_path / "m", tmp_path / "c"), env={"SB_AUTH_TOKEN": TOKEN})
    assert done.returncode == 2
    assert (
        "lacks the /v2" in done.stderr and "https://cavatica-api.sbgenomics.com/v2" in done.stderr
    )
    assert done.stderr.count("\n") == 1 and not is_mounted(tmp_path / "m")


def test_an_unreachable_platform_fails_the_mount_within_3_s(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "m").mkdir()
    started = time.monotonic()
    done = remotefs(
        *sb(f"http://127.0.0.1:{port}/v2", tmp_path / "m", tmp_path / "c"),
        env={"SB_AUTH_TOKEN": TOKEN},
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2 and "cannot reach the platform" in done.stderr, done.stderr
    assert elapsed < 3 + 3, elapsed  # the budget, plus starting two Python processes
    # A failed first mount leaves no per-endpoint cache directory behind.
    assert not [p for p in (tmp_path / "c").iterdir() if p.is_dir()]


def test_a_refused_token_leaves_no_cache_directory(emulator: Emulator, tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    done = remotefs(
        *sb(f"{emulator.url}/v2", tmp_path / "m", tmp_path / "c"),
        env={"SB_AUTH_TOKEN": "not-a-token"},
    )
    assert done.returncode == 2 and "refused" in done.stderr
    assert not [p for p in (tmp_path / "c").iterdir() if p.is_dir()]


def test_umount_refuses_what_is_not_a_remotefs_mount(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a bind mount needs root")
    source, target = tmp_path / "source", tmp_path / "bound"
    source.mkdir()
    target.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    try:
        done = remotefs("umount", target)
        assert done.returncode == 2 and "not remotefs; nothing unmounted" in done.stderr
        assert is_mounted(target)
        done = remotefs("umount", "/proc")
        assert done.returncode == 2 and "proc mount, not remotefs" in done.stderr
        done = remotefs("umount", source)
        assert done.returncode == 2 and "is not a mount point" in done.stderr
    finally:
        subprocess.run(["umount", str(target)], check=False)


def test_help_reads_as_help() -> None:
    top = remotefs("--help").stdout
    mount = remotefs("mount", "--help").stdout
    assert "``" not in top and "``" not in mount
    assert "an empty directory" in mount  # the mount point is explained
    assert "(default 60)" in mount and "(default 30)" in mount  # --ttl, --timeout


def test_debug_logs_one_line_per_request_without_secrets(
    emulator: Emulator, tmp_path: Path
) -> None:
    args = [str(a) for a in sb(f"{emulator.url}/v2", tmp_path / "m", tmp_path / "c", "--debug")]
    mount = start_mount(tmp_path / "m", args[2:], {"SB_AUTH_TOKEN": TOKEN}, tmp_path / "m.log")
    try:
        assert (mount.path / "reads" / "small.txt").read_text() == "hello remotefs\n"
        assert mount.unmount() == 0
    finally:
        mount.cleanup()
    log = (tmp_path / "m.log").read_text()
    lines = [line for line in log.splitlines() if "remotefs.http.send" in line and " → " in line]
    assert any(f"GET {emulator.url}/v2/files → 200" in line for line in lines), lines
    assert any("/sb-storage/" in line and " → 20" in line and " bytes, " in line for line in lines)
    assert all(line.rstrip().endswith(" ms") for line in lines)
    assert TOKEN not in log and "Signature=" not in log and "Expires=" not in log
