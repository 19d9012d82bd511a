"""Real kernel mounts in a subprocess (never in the process that reads them).

``start_mount`` runs ``remotefs mount --foreground`` with a readiness pipe
(``REMOTEFS_READY_FD``): it returns once the child has mounted, or raises with the child's
one-line error and its log. ``Mount.unmount`` runs ``fusermount3 -u`` and requires the child
to exit 0; ``Mount.cleanup`` is the last resort for a ``finally`` (lazy unmount, kill by PID).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from remotefs.ready import NotReady, read_line

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

    def cleanup(self) -> None:
        if os.path.ismount(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class MountFailed(RuntimeError):
    pass


def start_mount(mountpoint: Path, args: list[str], env: dict[str, str], log: Path) -> Mount:
    mountpoint.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    full_env = dict(os.environ, **env, REMOTEFS_READY_FD=str(write_end))
    cmd = [sys.executable, "-m", "remotefs", "mount", str(mountpoint), "--foreground", *args]
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=full_env,
            pass_fds=(write_end,),
        )
    os.close(write_end)
    mount = Mount(proc, mountpoint, log)
    try:
        try:
            answer = read_line(read_end, READY_TIMEOUT)
        except NotReady:
            raise MountFailed(f"not mounted in {READY_TIMEOUT} s: {log.read_text()}") from None
        finally:
            os.close(read_end)
        if answer != "ready":
            proc.wait(timeout=30)
            raise MountFailed(f"{answer} (exit {proc.returncode}): {log.read_text()}")
    except BaseException:
        mount.cleanup()
        raise
    return mount
