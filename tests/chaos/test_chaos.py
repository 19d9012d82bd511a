"""The chaos tier: a seeded random schedule of platform faults against both mounts while
eight reader processes hunt for the interleavings no other test thought of.

The schedule (from ``REMOTEFS_CHAOS_SEED``, else a random seed, printed either way) steps
through: latency above and below ``--timeout``, bodies stalled halfway, 503 bursts, dropped
bodies, 429 storms (SB's budget and ODM's), signed URLs that expire in 2 s, access revoked
to a file, and the emulator killed and restarted on its port. Readers (``worker.py``) list,
stat, open and read (sequentially, at random, across EOF) and get xattrs on both mounts,
checking every call: exact names, sizes and bytes, or EIO/EACCES/ENOENT; never longer than
``--timeout`` + 2 s. Afterwards: both mount processes are alive, every file reads back
exact once the faults stop, and the mounts hold no more threads or sockets than before
beyond what the transport keeps (its exchange threads, up to its connection limit).

``REMOTEFS_CHAOS_SECONDS`` sets the schedule's length (CI: 45 s, the whole test ~90 s).
Replay a failure with the seed its message names: ``REMOTEFS_CHAOS_SEED=N`` (the same
faults in the same order, and the same readers' choices; the timing, and so the
interleavings, differ).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from remotefs.transport import PRESTARTED_THREADS
from tests.mount.conftest import PROJECT, TOKEN, platform_mount
from tests.support.emulator import Emulator, start_emulator
from tests.support.expect import Source, mount_files
from tests.support.fuse import Mount, fuse_unavailable

SECONDS = float(os.environ.get("REMOTEFS_CHAOS_SECONDS", "45"))
SEED = int(os.environ.get("REMOTEFS_CHAOS_SEED") or random.randrange(1 << 32))
TIMEOUT = 4.0
SLACK = 2.0
WORKERS = 8
MAX_CONNECTIONS = 32
"""The transport's connection limit (``make_client``'s): also its exchange threads, at most."""
SOCKETS_AT_MOST = MAX_CONNECTIONS + 2
"""The transport's connection limit (every socket it has is in use or pooled), plus the
FUSE device and a margin."""
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(bool(fuse_unavailable()), reason=f"{fuse_unavailable()}")


def write_data(root: Path) -> Path:
    rng = random.Random(20261203)
    (root / "seq").mkdir(parents=True)
    (root / "seq" / "stream.bin.generated").write_text(json.dumps({"size": 256 << 20, "seed": 7}))
    (root / "seq" / "random.bin").write_bytes(rng.randbytes(6 << 20))
    (root / "bam").mkdir()
    (root / "bam" / "x.bam").write_bytes(rng.randbytes(2 << 20))
    (root / "bam" / "x.bam.bai").write_bytes(rng.randbytes(20_000))
    (root / "many").mkdir()
    for i in range(150):  # two SB pages
        (root / "many" / f"m-{i:03d}.txt").write_bytes(rng.randbytes(i * 37))
    (root / "nested" / "a" / "b").mkdir(parents=True)
    (root / "nested" / "a" / "b" / "deep.txt").write_text("deep\n")
    (root / "top.txt").write_text("top\n")
    return root


def worker_view(mount: Mount, data: Path, platform: str) -> dict[str, Any]:
    """What a worker checks a mount against: its files and sources, its folders' names."""
    files = mount_files(data, platform)
    folders: dict[str, set[str]] = {}
    if platform == "sevenbridges":
        for rel in files:
            parts = rel.split("/")
            for depth in range(len(parts)):
                folders.setdefault("/".join(parts[:depth]), set()).add(parts[depth])
    else:
        folders = {"": {"studies", "all"}, "all": {rel.split("/", 1)[1] for rel in files}}
    return {
        "path": str(mount.path),
        "files": {rel: _source_spec(src) for rel, src in files.items()},
        "folders": {rel: sorted(names) for rel, names in folders.items()},
    }


def _source_spec(src: Source) -> dict[str, Any]:
    generated = src.generated
    return {
        "path": str(src.path),
        "size": src.size,
        "seed": generated.seed if generated is not None else None,
    }


def threads_and_sockets(pid: int) -> tuple[int, int]:
    threads = len(os.listdir(f"/proc/{pid}/task"))
    sockets = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with suppress(OSError):
            sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return threads, sockets


def wait_for(condition: Callable[[], bool], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


class Platform:
    """The emulator under the schedule: its faults, and its death and rebirth on one port."""

    def __init__(self, data: Path, log_dir: Path, rng: random.Random) -> None:
        self.data, self.log_dir, self.rng = data, log_dir, rng
        self.emu = self._start(0)
        self.port = int(self.emu.url.rsplit(":", 1)[1])
        self.faults: Counter[str] = Counter()
        self.file_ids: list[str] = []

    def _start(self, port: int) -> Emulator:
        return start_emulator(
            ["--data", str(self.data), "--project", PROJECT],
            self.log_dir / "emulator.log",
            (TOKEN,),
            port=port,
        )

    def inflict(self, hold: float) -> None:
        """One fault, held for ``hold`` seconds, then cleared."""
        kind = self.rng.choice(
            ["latency>", "latency<", "stall", "503", "drop", "429", "expiry", "revoke", "restart"]
        )
        self.faults[kind] += 1
        if kind == "restart":
            self.emu.kill()
            time.sleep(hold)
            self.emu = self._start(self.port)
            return
        knobs: dict[str, Any] = {
            "latency>": {"latency_ms": (TIMEOUT + 2) * 1000},
            "latency<": {"latency_ms": self.rng.choice([50, 300, 1000])},
            "stall": {"stall_every": 2, "stall_ms": (TIMEOUT + 1) * 1000},
            "503": {"fail_every": self.rng.choice([2, 3])},
            "drop": {"drop_every": self.rng.choice([2, 3])},
            "429": {
                "sb_rate_limit": 15,
                "sb_rate_window": hold,
                "odm_rate_limit": 15,
                "odm_rate_window": 2,
            },
            "expiry": {"url_lifetime": 2},
            "revoke": {"revoked": self.rng.sample(self.file_ids, min(3, len(self.file_ids)))},
        }[kind]
        self.emu.configure(**knobs)
        time.sleep(hold)
        self.calm()

    def calm(self) -> None:
        self.emu.configure(
            latency_ms=0,
            stall_every=0,
            fail_every=0,
            drop_every=0,
            sb_rate_limit=1000,
            sb_rate_window=300,
            odm_rate_limit=0,
            url_lifetime=3600,
            revoked=[],
        )

    def stop(self) -> None:
        self.emu.stop()


@contextmanager
def workers(specs: list[dict[str, Any]], tmp: Path) -> Iterator[list[subprocess.Popen[str]]]:
    procs = []
    try:
        for i, spec in enumerate(specs):
            path = tmp / f"worker-{i}.json"
            path.write_text(json.dumps(spec))
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(Path(__file__).parent / "worker.py"), str(path)],
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "PYTHONPATH": str(REPO)},
                )
            )
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_chaos(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    print(f"\nchaos: seed {SEED}, {SECONDS:.0f} s (REMOTEFS_CHAOS_SEED={SEED} replays it)")
    data = write_data(tmp_path / "data")
    platform = Platform(data, tmp_path, rng)
    try:
        with ExitStack() as stack:
            mounts = {
                name: stack.enter_context(
                    platform_mount(
                        name,
                        platform.emu,
                        tmp_path,
                        "--timeout",
                        str(TIMEOUT),
                        "--ttl",
                        "2",
                        "--cache-size",
                        "64M",
                        name=name,
                    )
                )
                for name in ("sevenbridges", "genestack")
            }
            views = {name: worker_view(m, data, name) for name, m in mounts.items()}
            platform.file_ids = [
                os.getxattr(mounts["sevenbridges"].path / rel, "user.remotefs.id").decode()
                for rel in ("seq/random.bin", "bam/x.bam", "top.txt")
            ]
            before = {name: threads_and_sockets(m.pid) for name, m in mounts.items()}

            stop_at = time.monotonic() + SECONDS
            specs = [
                {
                    "seed": rng.randrange(1 << 32),
                    "stop_at": stop_at,
                    "max_call_seconds": TIMEOUT + SLACK,
                    "mounts": list(views.values()),
                }
                for _ in range(WORKERS)
            ]
            with workers(specs, tmp_path) as procs:
                while time.monotonic() < stop_at - 1:
                    platform.inflict(hold=rng.uniform(1.0, 5.0))
                    time.sleep(rng.uniform(0.3, 2.0))
                platform.calm()
                reports = []
                for proc in procs:
                    out, _ = proc.communicate(timeout=SECONDS + 120)
                    assert proc.returncode == 0, f"seed {SEED}: a worker failed: {out[-2000:]}"
                    reports.append(json.loads(out.splitlines()[-1]))

            calls: Counter[str] = Counter()
            errors: Counter[str] = Counter()
            violations = []
            for report in reports:
                calls.update(report["calls"])
                errors.update(report["errors"])
                violations += report["violations"]
            print(
                f"chaos: {sum(calls.values())} calls {dict(calls)}; errors {dict(errors)}; "
                f"faults {dict(platform.faults)}"
            )
            assert not violations, f"seed {SEED}: {violations[:20]}"
            for name, m in mounts.items():
                log = (tmp_path / f"{name}.log").read_text()
                assert m.proc.poll() is None, f"seed {SEED}: {name} died: {log[-3000:]}"
                assert "Traceback" not in log, f"seed {SEED}: {name}: {log[-5000:]}"

            # The faults have stopped: every file reads back exact, on both mounts.
            for name, m in mounts.items():
                for rel, src in mount_files(data, name).items():
                    assert wait_for(lambda p=m.path / rel, s=src: _reads(p, s), 30), (
                        f"seed {SEED}: {name}/{rel} does not read back exact"
                    )
            # No thread or socket left behind: the transport keeps its exchange threads (at
            # most its connection limit, some started with the mount) and trio's other idle
            # workers leave after 10 s; anything beyond that is a leak.
            kept = MAX_CONNECTIONS - PRESTARTED_THREADS
            for name, m in mounts.items():
                threads0, _ = before[name]

                def settled(pid: int = m.pid, threads0: int = threads0) -> bool:
                    threads, sockets = threads_and_sockets(pid)
                    return threads <= threads0 + kept + 4 and sockets <= SOCKETS_AT_MOST

                assert wait_for(settled, 30), (
                    f"seed {SEED}: {name}: threads/sockets {threads_and_sockets(m.pid)}, "
                    f"before {before[name]}"
                )
    finally:
        platform.stop()


def _reads(path: Path, source: Source) -> bool:
    try:
        return path.read_bytes() == source.read()
    except OSError:
        return False
