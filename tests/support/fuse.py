"""Real kernel mounts in a subprocess (never in the process that reads them).

``start_mount`` runs ``remotefs mount --foreground`` with a readiness pipe
(``REMOTEFS_READY_FD``): it returns once the child has mounted, or raises with the child's
one-line error and its log. ``Mount.unmount`` runs ``fusermount3 -u`` and requires the child
to exit 0; ``Mount.cleanup`` is the last resort for a ``finally`` (lazy unmount, kill by PID).
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from remotefs.ready import NotReady, spawn_mount

READY_TIMEOUT = 60.0


def fuse_unavailable() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if subprocess.run(["which", "fusermount3"], capture_output=True).returncode != 0:
        return "no fusermount3"
    return None


@dataclass
class Mount:
    proc: subprocess.Popen[bytes]
    path: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def unmount(self) -> int:
        done = subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return self.proc.wait(timeout=30)

    def close(self) -> None:
        """Unmount, asserting a clean exit, and leave nothing behind either way."""
        try:
            assert self.unmount() == 0
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        if is_mounted(self.path):  # also a dead mount, which os.path.ismount cannot stat
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def is_mounted(path: Path) -> bool:
    """Whether anything is mounted at ``path``, alive or dead (``os.path.ismount`` cannot stat
    a dead FUSE mount), from /proc/self/mountinfo (mount points there escape bytes as octal)."""
    wanted = str(path.absolute())
    try:
        with open("/proc/self/mountinfo") as f:
            return any(
                re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4]) == wanted
                for line in f
            )
    except OSError:
        return False


class MountFailed(RuntimeError):
    """The mount did not come up: ``reason`` in one line, then the child's log."""

    def __init__(self, reason: str, log_text: str) -> None:
        super().__init__(f"{reason}: {log_text}")
        self.reason = reason


def start_mount(
    mountpoint: Path,
    args: list[str],
    env: dict[str, str],
    log: Path,
    *,
    base_env: Mapping[str, str] | None = None,
) -> Mount:
    """Mount with ``env`` added to ``base_env`` (default: this process's environment)."""
    try:
        mountpoint.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a stale mount of a killed process: the mount command handles it
        if exc.errno != errno.ENOTCONN:
            raise
    with open(log, "ab") as log_file:
        try:
            proc, answer = spawn_mount(
                [str(mountpoint), *args],
                env={**(os.environ if base_env is None else base_env), **env},
                timeout=READY_TIMEOUT,
                log=log_file,
            )
        except NotReady:
            if is_mounted(mountpoint):
                subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)
            raise MountFailed(f"not mounted in {READY_TIMEOUT} s", log.read_text()) from None
    mount = Mount(proc, mountpoint, log)
    if answer != "ready":
        try:
            proc.wait(timeout=30)
        finally:
            mount.cleanup()
        raise MountFailed(f"{answer} (exit {proc.returncode})", log.read_text())
    return mount
