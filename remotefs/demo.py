"""``remotefs demo [MOUNTPOINT]``: the emulator with the demo dataset, mounted, in one command.

It starts ``remotefs emulator --demo`` on a free loopback port, then two mounts of it —
``MOUNTPOINT/sevenbridges`` (the demo project) and ``MOUNTPOINT/genestack`` (ODM's
``studies/`` and ``all/``) — each ``remotefs mount --foreground`` in its own process, prints
a few commands to try and waits. Ctrl-C or SIGTERM unmounts both (``fusermount3 -u``), stops
the mount processes and the emulator, by PID, in that order, and removes the directories it
created: nothing is left mounted or running.

Children run in their own sessions, so a terminal's Ctrl-C reaches only this process, which
then stops them in order. The demo token is a fixed, public value: it opens only this local
emulator, and it reaches the mounts through their environment, never their command line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from remotefs.ready import NotReady, read_line, spawn_mount

DEMO_TOKEN = "demo-token"
DEMO_PROJECT = "demo-user/demo"
EMULATOR_START_TIMEOUT = 600.0  # the first run downloads and builds the dataset
MOUNT_START_TIMEOUT = 60.0


class DemoError(RuntimeError):
    pass


def _read_line(fd: int, timeout: float, what: str) -> str:
    try:
        return read_line(fd, timeout)
    except NotReady:
        raise DemoError(f"{what} did not start within {timeout:.0f} s") from None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@dataclass
class Demo:
    root: Path
    cache_dir: Path | None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    mounts: list[Path] = field(default_factory=list)
    created: list[Path] = field(default_factory=list)
    url: str = ""

    def _mkdir(self, path: Path) -> None:
        if not path.exists():
            path.mkdir()
            self.created.append(path)

    def start(self) -> None:
        cmd = [sys.executable, "-m", "remotefs", "emulator", "--demo", "--port", "0"]
        if self.cache_dir is not None:
            cmd += ["--cache-dir", str(self.cache_dir)]
        env = dict(os.environ, REMOTEFS_EMULATOR_TOKENS=DEMO_TOKEN)
        emulator = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, env=env, bufsize=0, start_new_session=True
        )
        self.procs.append(emulator)
        assert emulator.stdout is not None
        line = _read_line(emulator.stdout.fileno(), EMULATOR_START_TIMEOUT, "the emulator")
        if not line.startswith("listening on "):
            raise DemoError(f"the emulator failed (exit {emulator.wait()})")
        self.url = line.removeprefix("listening on ")
        self._mkdir(self.root)
        self._mount(
            "sevenbridges",
            ["--api-url", f"{self.url}/v2", "--project", DEMO_PROJECT],
            {"SB_AUTH_TOKEN": DEMO_TOKEN},
        )
        self._mount("genestack", ["--api-url", self.url], {"GENESTACK_API_TOKEN": DEMO_TOKEN})

    def _mount(self, platform: str, args: list[str], secrets: dict[str, str]) -> None:
        mountpoint = self.root / platform
        self._mkdir(mountpoint)
        args = [str(mountpoint), "--platform", platform, *args]
        if self.cache_dir is not None:
            args += ["--cache-dir", str(self.cache_dir)]
        try:
            proc, answer = spawn_mount(
                args,
                env={**os.environ, **secrets},
                timeout=MOUNT_START_TIMEOUT,
                start_new_session=True,
            )
        except NotReady:
            raise DemoError(
                f"the {platform} mount did not start within {MOUNT_START_TIMEOUT:.0f} s"
            ) from None
        self.procs.append(proc)
        if answer != "ready":
            raise DemoError(answer.removeprefix("error: ") or f"the {platform} mount failed")
        self.mounts.append(mountpoint)

    def stop(self) -> None:
        for mountpoint in reversed(self.mounts):
            subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True)
        for proc in reversed(self.procs):  # mounts first, the emulator last
            _stop(proc)
        for mountpoint in self.mounts:  # a mount process that died: detach what it left
            if os.path.ismount(mountpoint):
                subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)
        for path in reversed(self.created):
            if not os.path.ismount(path):
                shutil.rmtree(path, ignore_errors=True)


def hints(demo: Demo) -> str:
    sb, odm = demo.root / "sevenbridges", demo.root / "genestack"
    return f"""
remotefs demo: the demo dataset, served by a local emulator at {demo.url}, is mounted
(the emulator's token is {DEMO_TOKEN}; it opens only this local emulator):
  {sb}   the Seven Bridges project {DEMO_PROJECT}
  {odm}     Genestack ODM: studies/ and all/

Try:
  ls -l {sb}/bam {odm}/studies
  samtools view -c {sb}/bam/ex1.bam seq1:100-1000
  samtools view -H {odm}/all/range.bam | head
  getfattr -d {sb}/bam/ex1.bam
  md5sum {sb}/big/random-1GiB.bin
  {sys.executable} -c 'import h5py; print(list(h5py.File("{sb}/hdf5/adata.h5ad")))'
  curl -s -H 'X-SBG-Auth-Token: {DEMO_TOKEN}' {demo.url}/v2/user   # the API itself
  curl -s {demo.url}/_emulator/stats     # what crossed the "network"

Ctrl-C unmounts and stops everything.
"""


def run_demo(mountpoint: Path, cache_dir: Path | None) -> int:
    """Run until Ctrl-C or SIGTERM; return 0 then, 1 if a child died on its own."""
    demo = Demo(mountpoint.absolute(), cache_dir)
    waited = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
    stopped_by_user = False
    try:
        demo.start()
        print(hints(demo), flush=True)
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
        try:
            while all(p.poll() is None for p in demo.procs):
                info = signal.sigtimedwait(waited, 1.0)
                if info is not None and info.si_signo != signal.SIGCHLD:
                    stopped_by_user = True
                    break
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    except KeyboardInterrupt:
        stopped_by_user = True
    finally:
        demo.stop()
    print("remotefs demo: unmounted and stopped", flush=True)
    return 0 if stopped_by_user else 1
