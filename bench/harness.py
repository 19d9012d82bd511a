"""The harness of ``scripts/bench mount``: what every workload group runs on.

- ``Platform``: one running emulator seen through its controls (latency, counter reset, stats
  once it is idle) and its one SB project.
- ``mounted``: ``remotefs mount --foreground`` of that project, started by the tests' helper
  (``tests.support.fuse.start_mount``, readiness on ``REMOTEFS_READY_FD``), unmounted on the
  way out (retried while busy, then lazily).
- ``run_tool``: one real tool (dd, samtools, ls, a Python child) with a deadline.
- ``RssSampler`` and ``proc_status``: the mount's resident memory.
- ``MountBench``: one ``scripts/bench mount`` session: a fresh cache directory and log per
  mount, mounting at a given latency, and running a group so that its failure in one run is
  recorded against it while the others go on.
- ``Figures`` (per-run values by key) and ``Row`` (one line of the table, with its target).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    HOST,
    STOP_TIMEOUT,
    TOKEN,
    BenchError,
    SbProject,
    Summary,
)
from tests.support.emulator import Emulator
from tests.support.fuse import Mount, MountFailed, is_mounted, start_mount

LATENCY_MS = 40.0
MOUNT_TIMEOUT = 60.0
"""Seconds for ``remotefs mount`` to exit after unmounting."""
TOOL_TIMEOUT = 120.0
"""Seconds for one samtools, ls or h5py run."""
RSS_INTERVAL = 0.05


# --- child processes ------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """The environment of every child: no proxies (loopback only), C locale, no SB settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and not k.startswith(("SB_", "REMOTEFS_"))
    }
    env.update(NO_PROXY=f"{HOST},localhost", no_proxy=f"{HOST},localhost", LC_ALL="C")
    env.update(extra)
    return env


def run_tool(
    argv: list[str], timeout: float, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[float, bytes, bytes]:
    """Run ``argv`` to completion within ``timeout``; (wall seconds, stdout, stderr).

    On a timeout it is killed; a process stuck in a FUSE request is released when the mount's
    cleanup unmounts, so the wait after the kill is bounded too.
    """
    what = shlex.join(argv)[:300]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env or child_env(),
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        with suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=STOP_TIMEOUT)
        raise BenchError(f"{what} did not finish in {timeout:.0f} s") from None
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip()[-500:]
        raise BenchError(f"{what}: exit {proc.returncode}: {tail}")
    return seconds, out, err


# --- the emulator's controls ----------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """What the emulator served between a reset and now."""

    storage_requests: int
    storage_bytes: int
    api_requests: int
    """Every other route: listings, download_info, user/project checks."""

    @property
    def storage_mb(self) -> float:
        return self.storage_bytes / 1e6


@contextmanager
def _control(what: str) -> Iterator[None]:
    """A failed control call is a BenchError (the group fails, the others go on)."""
    try:
        yield
    except (httpx.HTTPError, ValueError) as exc:
        raise BenchError(f"emulator control {what}: {exc}") from None


class Platform(SbProject):
    """One running emulator: its controls and counters, and look-ups in its one SB project.

    ``api_base``: where clients reach its API (a latency front, ``bench.front``) if not at
    the emulator itself; the controls always go to the emulator."""

    def __init__(self, emulator: Emulator, project: str, api_base: str | None = None) -> None:
        super().__init__(api_base or emulator.url, project)
        self.emulator = emulator
        self.pid = emulator.proc.pid

    def latency(self, ms: float) -> None:
        with _control("config"):
            self.emulator.configure(latency_ms=ms)

    def reset(self) -> None:
        with _control("reset"):
            self.emulator.reset()

    def stats(self) -> dict[str, Any]:
        with _control("stats"):
            return self.emulator.stats()

    def _cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def settle(self, timeout: float = 30.0) -> dict[str, Any]:
        """The stats once the emulator is idle: a response whose client went away is still
        streamed to its end (and counted only then), and must not run into the next
        measurement. Idle: the stats did not change and it used < 10 ms of CPU in 0.2 s."""
        deadline = time.monotonic() + timeout
        stats, cpu = self.stats(), self._cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            again, cpu_again = self.stats(), self._cpu_seconds()
            if again == stats and cpu_again - cpu < 0.01:
                return stats
            stats, cpu = again, cpu_again
        raise BenchError(f"the emulator was still busy after {timeout:.0f} s")

    def counts(self) -> Counts:
        stats = self.settle()
        requests, sent = stats["requests"], stats["bytes"]
        storage = int(requests.get("sb.storage", 0))
        return Counts(
            storage, int(sent.get("sb.storage", 0)), int(sum(requests.values())) - storage
        )


# --- mounting -------------------------------------------------------------------------------


def _log_tail(log: Path) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-6:])
    except OSError:
        return "(no log)"


def _unmount(m: Mount) -> None:
    """``fusermount3 -u`` (retried while busy), then wait for the process; by PID only."""
    for attempt in range(10):
        if not is_mounted(m.path):
            break
        done = subprocess.run(
            ["fusermount3", "-u", str(m.path)], capture_output=True, timeout=STOP_TIMEOUT
        )
        if done.returncode == 0:
            break
        time.sleep(0.2 * (attempt + 1))
    else:
        print(f"bench: {m.path} stayed busy; detaching it lazily", file=sys.stderr)
        subprocess.run(["fusermount3", "-u", "-z", str(m.path)], capture_output=True, timeout=30)
    try:
        rc = m.proc.wait(timeout=MOUNT_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"bench: mount {m.pid} did not exit after unmounting; killing it", file=sys.stderr)
        m.cleanup()  # SIGTERM, then SIGKILL
        rc = m.proc.returncode
    if rc != 0:
        print(f"bench: mount {m.pid} exited {rc}: {_log_tail(m.log)}", file=sys.stderr)


@contextmanager
def mounted(
    platform: Platform,
    mnt: Path,
    cache_dir: Path,
    log: Path,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[Mount]:
    """``remotefs mount --foreground`` of the emulator's project (API at ``platform.base``);
    yields once it said ready. ``env``: added to the mount's environment (``SSL_CERT_FILE``)."""
    if is_mounted(mnt):
        raise BenchError(f"{mnt} is still mounted")
    args = ["--platform", "sevenbridges", "--api-url", f"{platform.base}/v2"]
    args += ["--project", platform.project, "--cache-dir", str(cache_dir), *extra]
    try:
        m = start_mount(mnt, args, {"SB_AUTH_TOKEN": TOKEN}, log, base_env=child_env(**(env or {})))
    except MountFailed as exc:
        raise BenchError(f"the mount failed: {exc.reason}: {_log_tail(log)}") from None
    try:
        yield m
    finally:
        _unmount(m)


def lazy_unmount_if_mounted(mnt: Path) -> None:
    """The last resort of a ``finally``: detach whatever is still mounted at ``mnt``."""
    if is_mounted(mnt):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, timeout=30)


# --- memory ---------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """``Vm*`` lines of /proc/PID/status, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.startswith("Vm") and value.strip().endswith("kB"):
                out[key] = int(value.split()[0]) * 1024
    return out


class RssSampler:
    """Samples VmRSS of ``pid`` every ``RSS_INTERVAL`` s in a thread; ``peak`` in bytes."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self.peak = max(self.peak, proc_status(self.pid).get("VmRSS", 0))
            except OSError:
                return
            if self._stop.wait(RSS_INTERVAL):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=STOP_TIMEOUT)


# --- figures and the session ----------------------------------------------------------------


@dataclass
class Figures:
    """Per-run values by key, and the errors of each workload group (one per failed run)."""

    values: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def get(self, key: str) -> Summary | None:
        values = self.values.get(key)
        return Summary.of(values) if values else None

    def median(self, key: str) -> float:
        s = self.get(key)
        return s.median if s is not None else float("nan")

    def median_cell(self, key: str, fmt: str = ",.0f") -> str:
        """The median alone, for the notes; ``-`` if there is none."""
        s = self.get(key)
        return "-" if s is None else f"{s.median:{fmt}}"

    def range_cell(self, key: str | None, fmt: str) -> str:
        """``median (min-max)``; ``-`` if there is none."""
        s = self.get(key) if key else None
        return "-" if s is None else s.cell(fmt)


def both_orders(run: int, *parts: Callable[[], None]) -> None:
    """Run ``parts`` in order on even runs and reversed on odd ones, so that warm-up or drift
    favours neither the workload nor its reference."""
    for part in parts if run % 2 == 0 else reversed(parts):
        part()


class MountBench:
    """Everything one ``scripts/bench mount`` needs: paths, the emulator, the figures."""

    def __init__(
        self, platform: Platform, work: Path, data: Path, size: int, shm_copy: Path
    ) -> None:
        self.emu = platform
        self.work = work
        self.data = data
        """The tree the emulator serves (``--data``)."""
        self.size = size
        self.shm_copy = shm_copy
        """The big file's bytes in /dev/shm: a reference, and how the served bytes are checked."""
        self.mnt = work / "mnt"
        self.figures = Figures()
        self._serial = 0

    def fresh(self, what: str) -> tuple[Path, Path]:
        """A new cache directory and log file."""
        self._serial += 1
        cache = self.work / f"cache-{self._serial:03d}-{what}"
        return cache, self.work / f"mount-{self._serial:03d}-{what}.log"

    @contextmanager
    def mount(
        self,
        cache: Path,
        log: Path,
        latency_ms: float,
        extra: tuple[str, ...] = (),
        emu: Platform | None = None,
        env: dict[str, str] | None = None,
    ) -> Iterator[Mount]:
        """Mount with no latency (the mount's own start-up checks are not the workload), then
        set ``latency_ms`` and zero the counters; the latency goes back to 0 afterwards."""
        emu = emu or self.emu
        emu.latency(0)
        with mounted(emu, self.mnt, cache, log, extra, env) as m:
            emu.latency(latency_ms)
            emu.reset()
            try:
                yield m
            finally:
                emu.latency(0)

    @contextmanager
    def cold_mount(
        self,
        what: str,
        latency_ms: float,
        extra: tuple[str, ...] = (),
        emu: Platform | None = None,
        env: dict[str, str] | None = None,
    ) -> Iterator[Mount]:
        """``mount`` on a fresh cache directory, which is removed afterwards."""
        cache, log = self.fresh(what)
        with self.mount(cache, log, latency_ms, extra, emu, env) as m:
            yield m
        shutil.rmtree(cache, ignore_errors=True)

    def group(self, name: str, fn: Callable[[int], None], run: int) -> None:
        """Run one workload group; a failure is recorded against it and the others go on (the
        mount may be broken for a moment while its code changes: later runs try again)."""
        t0 = time.monotonic()
        try:
            fn(run)
        except BenchError as exc:
            self.figures.errors.setdefault(name, []).append(f"run {run + 1}: {exc}")
            print(f"bench: run {run + 1}: {name}: {exc}", file=sys.stderr)
        finally:
            self.emu.latency(0)
        print(f"bench: run {run + 1}: {name} took {time.monotonic() - t0:.1f} s", file=sys.stderr)


# --- the table ------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    group: str
    mount_key: str
    unit: str
    fmt: str
    ref_name: str = "-"
    ref_key: str | None = None
    target: str = "-"
    passes: Callable[[Row, Figures], bool] | None = None
    """None: a figure to report, not judged."""

    def ratio(self, f: Figures) -> float | None:
        mine = f.get(self.mount_key)
        ref = f.get(self.ref_key) if self.ref_key else None
        if mine is None or ref is None or ref.median == 0:
            return None
        return mine.median / ref.median

    def cells(self, f: Figures) -> list[str]:
        def cell(key: str | None) -> str:
            text = f.range_cell(key, self.fmt)
            return text if text == "-" else f"{text} {self.unit}"

        ratio = self.ratio(f)
        if f.get(self.mount_key) is None:
            verdict = "ERROR" if self.group in f.errors else "skipped"
        elif self.passes is None:
            verdict = "report"
        elif self.ref_key is not None and ratio is None:
            verdict = "ERROR"
        else:
            verdict = "PASS" if self.passes(self, f) else "FAIL"
        if self.group in f.errors and verdict != "ERROR":
            verdict += " *"  # some runs failed
        return [
            self.name,
            cell(self.mount_key),
            self.ref_name,
            cell(self.ref_key),
            "-" if ratio is None else f"{ratio:.2f}x",
            self.target,
            verdict,
        ]


RowNumbers = dict[str, int]
"""A row's number in the table (from 1) by its ``mount_key``, for the notes that cite it."""


def ratio_at_least(minimum: float) -> Callable[[Row, Figures], bool]:
    return lambda row, f: (row.ratio(f) or 0.0) >= minimum


def ratio_at_most(maximum: float) -> Callable[[Row, Figures], bool]:
    return lambda row, f: (row.ratio(f) or float("inf")) <= maximum


def count_row(f: Figures, prefix: str, name: str) -> list[str]:
    """One line of the table of requests to the emulator, from the keys ``PREFIX.*``."""
    return [
        name,
        f.range_cell(f"{prefix}.requests", ",.0f"),
        f.range_cell(f"{prefix}.mb", ",.2f"),
        f.range_cell(f"{prefix}.read_mb", ",.2f"),
        f.range_cell(f"{prefix}.api", ",.0f"),
    ]
