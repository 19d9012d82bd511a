"""Starting and stopping a mount: signals, ``remotefs umount``, the daemon, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from remotefs.mount import KERNEL_READAHEAD, read_ahead_file
from tests.conftest import PROJECT, TOKEN
from tests.support.emulator import Emulator
from tests.support.fuse import start_mount


def _args(emulator: Emulator, tmp_path: Path) -> list[str]:
    return [
        "--platform",
        "sevenbridges",
        "--api-url",
        f"{emulator.url}/v2",
        "--project",
        PROJECT,
        "--cache-dir",
        str(tmp_path / "cache"),
    ]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_unmounts_cleanly(signum: int, emulator: Emulator, tmp_path: Path) -> None:
    mount = start_mount(
        tmp_path / "m", _args(emulator, tmp_path), {"SB_AUTH_TOKEN": TOKEN}, tmp_path / "log"
    )
    try:
        assert os.path.ismount(mount.path)
        mount.proc.send_signal(signum)
        assert mount.proc.wait(timeout=30) == 0
        assert not os.path.ismount(mount.path)
    finally:
        mount.cleanup()


def test_ready_mount_reads_ahead_one_mib(emulator: Emulator, tmp_path: Path) -> None:
    """A mount is announced only once the kernel has taken FUSE_INIT's reply, which caps
    read-ahead: set before it, 1 MiB fell back to 128 KiB and every read stayed 128 KiB."""
    mount = start_mount(
        tmp_path / "m", _args(emulator, tmp_path), {"SB_AUTH_TOKEN": TOKEN}, tmp_path / "log"
    )
    try:
        assert _read_ahead_kb(mount.path) == KERNEL_READAHEAD >> 10 == 1024
    finally:
        mount.cleanup()


def _read_ahead_kb(mountpoint: Path) -> int:
    return int(read_ahead_file(os.stat(mountpoint).st_dev).read_text())


def test_daemon_mode_and_remotefs_umount(emulator: Emulator, tmp_path: Path) -> None:
    mnt = tmp_path / "m"
    mnt.mkdir()
    env = dict(os.environ, SB_AUTH_TOKEN=TOKEN)
    done = subprocess.run(
        [sys.executable, "-m", "remotefs", "mount", str(mnt), *_args(emulator, tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert done.returncode == 0, done.stderr
        assert os.path.ismount(mnt)  # returned only once mounted
        assert _read_ahead_kb(mnt) == 1024  # and once its read-ahead is raised
        assert "top.txt" in os.listdir(mnt)
        pids = [
            p
            for p in Path("/proc").iterdir()
            if p.name.isdigit()
            and str(mnt).encode() in _cmdline(p)
            and b"--foreground" in _cmdline(p)
        ]
        assert len(pids) == 1
        done = subprocess.run(
            [sys.executable, "-m", "remotefs", "umount", str(mnt)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert not os.path.ismount(mnt)
        _wait_gone(int(pids[0].name))
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes()
    except OSError:
        return b""


def _wait_gone(pid: int) -> None:
    """The daemon exits after its unmount; bounded wait via pidfd (no polling sleeps)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        import select

        ready, _, _ = select.select([fd], [], [], 30)
        assert ready, f"daemon {pid} still running 30 s after its unmount"
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("file", "is not a directory"),
        ("nonempty", "is not empty"),
        ("badtoken", "refused"),
        ("badproject", "does not exist"),
        ("badurl", "cannot reach the platform at http://127.0.0.1:9/v2"),
        ("cachefile", "cache directory"),
        ("cachereadonly", "cache directory"),
    ],
)
def test_bad_input_is_one_line_before_mounting(
    setup: str, message: str, emulator: Emulator, tmp_path: Path
) -> None:
    mnt = tmp_path / "m"
    token, project = TOKEN, PROJECT
    if setup == "file":
        mnt.write_text("x")
    elif setup != "missing":
        mnt.mkdir()
    if setup == "nonempty":
        (mnt / "x").write_text("x")
    if setup == "badtoken":
        token = "wrong"
    if setup == "badproject":
        project = "nobody/nothing"
    api = "http://127.0.0.1:9/v2" if setup == "badurl" else f"{emulator.url}/v2"
    cache = tmp_path / "cache"
    if setup == "cachefile":
        cache.write_text("not a directory")
    if setup == "cachereadonly":
        cache.mkdir(mode=0o500)
        if os.access(cache, os.W_OK):  # root ignores modes: a read-only bind is not worth it
            cache = Path("/proc/remotefs-cache")  # not creatable, whoever we are
    args = [
        "--platform",
        "sevenbridges",
        "--api-url",
        api,
        "--project",
        project,
        "--cache-dir",
        str(cache),
        "--timeout",
        "10",
        "--foreground",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "remotefs", "mount", str(mnt), *args],
        env=dict(os.environ, SB_AUTH_TOKEN=token),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("remotefs: error:")]
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not os.path.ismount(mnt)


def test_missing_credentials(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SB_", "GENESTACK_"))}
    env["HOME"] = str(tmp_path)
    for platform in ("sevenbridges", "genestack"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "remotefs",
                "mount",
                str(tmp_path / "m"),
                "--platform",
                platform,
                "--api-url",
                "http://127.0.0.1:9",
                "--foreground",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0
        assert done.stderr.strip().startswith("remotefs: error: no "), done.stderr
