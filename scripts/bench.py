"""Benchmarks of remotefs, run as ``scripts/bench SUB-COMMAND``: ``emulator`` and ``mount``.

``scripts/bench emulator [--runs N] [--size BYTES]`` measures how fast the emulator itself
serves bytes over loopback HTTP, so that a later benchmark of the mount can tell whether the
mount or the emulator is the bottleneck. It builds a data tree holding the demo's generated
file (``big/random-1GiB.bin``, seed 1, bytes made on demand by the emulator), writes the same
bytes to a local file, starts ``python -m remotefs emulator`` on 127.0.0.1 and times ``curl``
on three workloads, each against a reference measured in the same loop iteration:

- full single-stream GET of the signed Seven Bridges storage URL, vs ``curl file://local.bin``;
- 4 parallel ranged GETs of that URL (a quarter of the file each), vs 4 parallel ranged
  ``file://`` reads; aggregate rate = total bytes / ``time_total`` of the slowest transfer;
- full GET of the Genestack ODM download route, vs ``curl file://local.bin``.

Every transfer's byte count (and HTTP status) is checked; a broken transfer aborts the run.
Figures are medians with min-max over the runs; MB = 10^6 bytes.

How to read the ratios (emulator median / reference median): the reference is curl copying a
file that is hot in the page cache, with no HTTP and no socket, so it is about the fastest curl
can take bytes in on this machine: a ceiling, not a disk figure. A ratio near 1 means the
emulator keeps up with curl itself; a low ratio means the emulator (generating bytes, HTTP
framing, loopback TCP) is what limits the transfer. Ratios are comparable across machines and
runs far better than absolute MB/s; absolute figures only compare on the same host. The one
absolute target: a full single-stream GET at >= 600 MB/s (the emulator must outrun a mount).

``scripts/bench mount [--runs N] [--quick]`` runs real tools through a real Seven Bridges
mount (``remotefs mount --foreground``, readiness on ``REMOTEFS_READY_FD``) of an emulated
project, each workload beside a reference measured in the same run, and prints one table
(medians of N >= 3 runs, min-max, ratio, target, PASS/FAIL) and the emulator's request counts.
The data: the generated 1 GiB file (256 MiB with ``--quick``), a folder of 2,000 tiny files, a
coordinate-sorted indexed BAM of >= 300 MB (generated once, deterministically, under
``$XDG_CACHE_HOME/remotefs/bench``), the demo's .h5ad, and (not with ``--quick``) a folder of
100,000 empty files. Workloads, each on a fresh mount with a fresh cache directory ("cold";
remounting also drops the mount's page cache, the host's caches are never dropped):

- ``dd bs=1M`` of the big file vs one httpx+trio streaming GET of it; the same with 40 ms
  added per request vs the cold read; a warm re-read on the same mount vs ``dd`` of a copy in
  /dev/shm; a re-read after remounting on the same cache directory vs the cold read; the
  mount's peak RSS during the cold read (VmHWM, and VmRSS sampled every 50 ms);
- ``samtools view -c`` of a 100 kb region and of 10 scattered 1 kb regions (one invocation),
  at 40 ms, vs samtools reading the BAM over HTTP itself (``URL##idx##URL`` of signed URLs);
  requests and bytes from the emulator's counters, and what samtools read from its sockets;
- ``ls -l`` of the 2,000-entry folder at 40 ms vs its 20 pages fetched in series with httpx;
- h5py reading one dataset of the .h5ad at 40 ms vs h5py on a local copy;
- RSS per entry after one ``ls -f`` of the 100,000-entry folder (a 10,000-entry folder when
  the emulator would take longer than ``LIST_BUDGET`` to serve the big one: it says so).

A workload that fails in one run is reported and tried again in the next: the mount's code may
be changing while this runs.

Exit status: 0 whatever the figures (a benchmark reports, it does not fail CI); 1 if something
broke (the emulator did not start, a transfer came back short, a workload failed, ...); 2 on a
usage error.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import re
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlencode, urlsplit

TOKEN = "bench-token"
BIG_DIR = "big"
BIG_NAME = "random-1GiB.bin"
BIG_SEED = 1
DEFAULT_SIZE = 1 << 30
DEFAULT_RUNS = 5
TARGET_MBPS = 600.0
PARALLEL = 4
HOST = "127.0.0.1"

START_TIMEOUT = 60.0
"""Seconds for the emulator to print ``listening on …``."""
STOP_TIMEOUT = 10.0
API_TIMEOUT = 30.0
"""Seconds for one JSON API call."""
MIN_TRANSFER_RATE = 10e6
"""Bytes/s below which a transfer is called hung (sets curl's --max-time, plus 60 s)."""


class BenchError(Exception):
    """Something broke; the figures would be meaningless. Printed as one line, exit 1."""


# --- small helpers --------------------------------------------------------------------------


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / max(seconds, 1e-6) / 1e6


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Summary:
        return cls(statistics.median(values), min(values), max(values))

    def cell(self) -> str:
        return f"{self.median:,.0f} ({self.low:,.0f}-{self.high:,.0f})"


def _raise_on_sigterm(signum: int, frame: Any) -> NoReturn:
    raise SystemExit(128 + signum)  # so every ``finally`` (emulator, temp dir) runs


# --- curl -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurlJob:
    """One curl transfer: what to fetch and what must come back."""

    url: str
    expect_bytes: int
    byte_range: tuple[int, int] | None = None  # inclusive, as curl's -r
    headers: tuple[str, ...] = ()

    @property
    def expect_status(self) -> str:
        if self.url.startswith("file:"):
            return "000"  # curl reports no response code for file://
        return "206" if self.byte_range is not None else "200"

    def argv(self, max_time: float) -> list[str]:
        argv = ["curl", "-s", "-S", "--noproxy", "*", "--max-time", f"{max_time:.0f}"]
        argv += ["-o", "/dev/null", "-w", "%{size_download} %{time_total} %{http_code}"]
        if self.byte_range is not None:
            argv += ["-r", f"{self.byte_range[0]}-{self.byte_range[1]}"]
        for header in self.headers:
            argv += ["-H", header]
        return [*argv, self.url]


def run_curls(jobs: list[CurlJob]) -> list[float]:
    """Run ``jobs`` at once; return each one's ``time_total`` after checking what it got."""
    max_time = 60 + max(j.expect_bytes for j in jobs) / MIN_TRANSFER_RATE
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for job in jobs:
            procs.append(
                subprocess.Popen(
                    job.argv(max_time),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        deadline = time.monotonic() + max_time + 10
        times = []
        for job, proc in zip(jobs, procs, strict=True):
            try:
                out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                raise BenchError(f"curl {job.url} did not finish in {max_time:.0f} s") from None
            times.append(_check_curl(job, proc.returncode, out, err))
        return times
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)


def _check_curl(job: CurlJob, rc: int, out: bytes, err: bytes) -> float:
    what = f"curl {job.url}"
    if job.byte_range is not None:
        what += f" -r {job.byte_range[0]}-{job.byte_range[1]}"
    if rc != 0:
        raise BenchError(f"{what}: exit {rc}: {err.decode(errors='replace').strip()}")
    try:
        size_s, time_s, status = out.decode().split()
        size, seconds = int(size_s), float(time_s)
    except ValueError:
        raise BenchError(f"{what}: unexpected -w output {out!r}") from None
    if status != job.expect_status:
        raise BenchError(f"{what}: HTTP status {status}, expected {job.expect_status}")
    if size != job.expect_bytes:
        raise BenchError(f"{what}: got {size} bytes, expected {job.expect_bytes}: broken transfer")
    return seconds


def quarters(size: int) -> list[tuple[int, int]]:
    """``PARALLEL`` contiguous inclusive ranges covering ``[0, size)``."""
    bounds = [size * i // PARALLEL for i in range(PARALLEL + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(PARALLEL)]


# --- the emulator ---------------------------------------------------------------------------


def write_data(work: Path, size: int) -> tuple[Path, Path]:
    """The emulator's data tree (the demo's generated file) and ``local.bin`` (same bytes)."""
    try:
        from remotefs.emulator.content import GeneratedContent
    except ImportError as exc:
        raise BenchError(
            f"cannot import remotefs with {sys.executable} ({exc}); "
            "create .venv at the repository root or put a venv with remotefs first on PATH"
        ) from None
    free = shutil.disk_usage(work).free
    if free < size + (64 << 20):
        raise BenchError(f"{work}: {free} bytes free, the local reference file needs {size}")
    data = work / "data"
    (data / BIG_DIR).mkdir(parents=True)
    stub = data / BIG_DIR / f"{BIG_NAME}.generated"
    stub.write_text(json.dumps({"size": size, "seed": BIG_SEED}) + "\n")
    local = work / "local.bin"
    with open(local, "wb") as f:
        for piece in GeneratedContent(size, seed=BIG_SEED).iter_range(0, size):
            f.write(piece)
    if local.stat().st_size != size:
        raise BenchError(f"{local}: wrote {local.stat().st_size} bytes, expected {size}")
    return data, local


def _read_announcement(proc: subprocess.Popen[bytes], log: Path) -> str:
    """The URL from the emulator's ``listening on URL`` line, waited for at most START_TIMEOUT."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + START_TIMEOUT
    buf = b""
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchError(f"emulator did not announce itself in {START_TIMEOUT:.0f} s")
        ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
        if not ready:
            continue
        chunk = os.read(fd, 4096)  # unbuffered: select sees every byte still unread
        if not chunk:
            try:
                rc: int | None = proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                rc = None
            tail = log.read_text(errors="replace")[-2000:].strip()
            raise BenchError(f"emulator exited (status {rc}) before listening: {tail}")
        buf += chunk
    line = buf.split(b"\n", 1)[0].decode(errors="replace").strip()
    m = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)", line)
    if m is None:
        raise BenchError(f"emulator said {line!r}, expected 'listening on http://{HOST}:PORT'")
    return m.group(1)


def _drain(fd: int) -> None:
    """Read and drop the emulator's further stdout so it can never block on a full pipe."""
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass


@contextmanager
def running_emulator(
    data: Path, work: Path, extra_args: tuple[str, ...] = (), name: str = "emulator"
) -> Iterator[tuple[str, int]]:
    """Start ``python -m remotefs emulator`` on loopback; yield (base URL, PID); always stop it."""
    log = work / f"{name}.log"
    env = dict(os.environ, REMOTEFS_EMULATOR_TOKENS=TOKEN)
    argv = [sys.executable, "-m", "remotefs", "emulator", "--data", str(data)]
    argv += ["--host", HOST, "--port", "0", *extra_args]
    with open(log, "wb") as logfile:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=logfile, env=env
        )
    assert proc.stdout is not None
    drainer: threading.Thread | None = None
    try:
        url = _read_announcement(proc, log)
        drainer = threading.Thread(target=_drain, args=(proc.stdout.fileno(),), daemon=True)
        drainer.start()
        yield url, proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        if drainer is not None:
            drainer.join(timeout=STOP_TIMEOUT)
        proc.stdout.close()


# --- the platform APIs ----------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def http_get(url: str, headers: dict[str, str], byte_range: tuple[int, int] | None = None) -> bytes:
    if urlsplit(url).hostname != HOST:
        raise BenchError(f"refusing to fetch {url}: not on {HOST}")
    req = urllib.request.Request(url, headers=headers)
    if byte_range is not None:
        req.add_header("Range", f"bytes={byte_range[0]}-{byte_range[1]}")
    try:
        with _OPENER.open(req, timeout=API_TIMEOUT) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()[:300].decode(errors="replace")
        raise BenchError(f"GET {url}: HTTP {exc.code}: {body}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise BenchError(f"GET {url}: {exc}") from None


def get_json(url: str, headers: dict[str, str]) -> Any:
    body = http_get(url, headers)
    try:
        return json.loads(body)
    except ValueError:
        raise BenchError(f"GET {url}: not JSON: {body[:200]!r}") from None


SB_HEADERS = {"X-SBG-Auth-Token": TOKEN}
ODM_HEADER = f"Genestack-API-Token: {TOKEN}"


def _only(items: list[dict[str, Any]], what: str, **want: Any) -> dict[str, Any]:
    found = [i for i in items if all(i.get(k) == v for k, v in want.items())]
    if len(found) != 1:
        raise BenchError(f"expected exactly one {what} {want}, found {len(found)}")
    return found[0]


def sb_file_id(base: str, size: int) -> str:
    """The SB id of the big file, found as a client would: project → folder → file."""
    projects = get_json(f"{base}/v2/projects/", SB_HEADERS)["items"]
    if len(projects) != 1:
        raise BenchError(f"expected one SB project, found {len(projects)}")
    query = urlencode({"project": projects[0]["id"], "fields": "_all", "limit": 100})
    top = get_json(f"{base}/v2/files?{query}", SB_HEADERS)["items"]
    folder = _only(top, "SB folder", name=BIG_DIR, type="folder")
    query = urlencode({"parent": folder["id"], "fields": "_all", "limit": 100})
    inside = get_json(f"{base}/v2/files?{query}", SB_HEADERS)["items"]
    file = _only(inside, "SB file", name=BIG_NAME, type="file")
    if file.get("size") != size:
        raise BenchError(f"SB lists {BIG_NAME} at {file.get('size')} bytes, expected {size}")
    return str(file["id"])


def sb_signed_url(base: str, file_id: str) -> str:
    url = str(get_json(f"{base}/v2/files/{file_id}/download_info", SB_HEADERS)["url"])
    if urlsplit(url).hostname != HOST:
        raise BenchError(f"signed URL {url} is not on {HOST}")
    return url


def odm_download_url(base: str) -> str:
    query = urlencode({"filter": f"genestack:name={BIG_NAME}"})
    headers = {"Genestack-API-Token": TOKEN}
    data = get_json(f"{base}/api/v1/as-user/files?{query}", headers)["data"]
    if len(data) != 1:
        raise BenchError(f"ODM filter genestack:name={BIG_NAME} matched {len(data)} files")
    return f"{base}/api/v1/as-user/files/{data[0]['genestack:accession']}/download"


def spot_check(url: str, headers: dict[str, str], local: Path, size: int) -> None:
    """The served bytes equal local.bin at the start, middle and end (so the reference is fair)."""
    piece = min(size, 1 << 16)
    with open(local, "rb") as f:
        for start in sorted({0, size // 2 - piece // 2, size - piece}):
            start = max(start, 0)
            f.seek(start)
            want = f.read(piece)
            got = http_get(url, headers, (start, start + piece - 1))
            if got != want:
                raise BenchError(f"{url}: bytes at {start} differ from the local reference")


# --- the emulator benchmark -----------------------------------------------------------------


@dataclass
class Workload:
    name: str
    emulator: Callable[[], float]
    """One emulator measurement, MB/s."""
    reference: Callable[[], float]
    """One reference measurement, MB/s."""
    emulator_mbps: list[float]
    reference_mbps: list[float]


def single(job: CurlJob) -> float:
    return mbps(job.expect_bytes, run_curls([job])[0])


def parallel(jobs: list[CurlJob]) -> float:
    times = run_curls(jobs)
    return mbps(sum(j.expect_bytes for j in jobs), max(times))


def ranged_jobs(url: str, size: int) -> list[CurlJob]:
    return [CurlJob(url, b - a + 1, byte_range=(a, b)) for a, b in quarters(size)]


def emulator_workloads(base: str, local: Path, size: int) -> list[Workload]:
    file_id = sb_file_id(base, size)
    odm_url = odm_download_url(base)
    spot_check(sb_signed_url(base, file_id), {}, local, size)
    spot_check(odm_url, {"Genestack-API-Token": TOKEN}, local, size)
    local_url = local.resolve().as_uri()

    def sb_full() -> float:  # a fresh signed URL each time, as a client would; not timed
        return single(CurlJob(sb_signed_url(base, file_id), size))

    def sb_ranged() -> float:
        return parallel(ranged_jobs(sb_signed_url(base, file_id), size))

    return [
        Workload(
            "SB signed URL, full GET, 1 stream",
            sb_full,
            lambda: single(CurlJob(local_url, size)),
            [],
            [],
        ),
        Workload(
            f"SB signed URL, {PARALLEL} ranged GETs at once",
            sb_ranged,
            lambda: parallel(ranged_jobs(local_url, size)),
            [],
            [],
        ),
        Workload(
            "ODM download route, full GET",
            lambda: single(CurlJob(odm_url, size, headers=(ODM_HEADER,))),
            lambda: single(CurlJob(local_url, size)),
            [],
            [],
        ),
    ]


def print_table(workloads: list[Workload]) -> None:
    rows = [("workload", "emulator MB/s median (min-max)", "reference MB/s median (min-max)")]
    ratios = ["ratio"]
    for w in workloads:
        emu, ref = Summary.of(w.emulator_mbps), Summary.of(w.reference_mbps)
        rows.append((w.name, emu.cell(), ref.cell()))
        ratios.append(f"{emu.median / ref.median:.2f}")
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for i, (row, ratio) in enumerate(zip(rows, ratios, strict=True)):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print(" | ".join([*cells, ratio.rjust(5)]))
        if i == 0:
            print("-+-".join(["-" * w for w in widths] + ["-" * 5]))


def cmd_emulator(args: argparse.Namespace) -> int:
    size, runs = args.size, args.runs
    if shutil.which("curl") is None:
        raise BenchError("curl is not installed")
    curl_version = subprocess.run(
        ["curl", "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.split("\n", 1)[0]
    work = Path(tempfile.mkdtemp(prefix="remotefs-bench-"))
    try:
        t0 = time.monotonic()
        data, local = write_data(work, size)
        print(f"bench: wrote {size:,} bytes in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        with running_emulator(data, work) as (base, _):
            workloads = emulator_workloads(base, local, size)
            for run in range(runs):
                for w in workloads:
                    # Alternate which goes first, so warm-up or drift favours neither side.
                    if run % 2 == 0:
                        w.emulator_mbps.append(w.emulator())
                        w.reference_mbps.append(w.reference())
                    else:
                        w.reference_mbps.append(w.reference())
                        w.emulator_mbps.append(w.emulator())
                figures = "; ".join(
                    f"{w.emulator_mbps[-1]:,.0f} vs {w.reference_mbps[-1]:,.0f}" for w in workloads
                )
                print(
                    f"bench: run {run + 1}/{runs} (MB/s, emulator vs reference): {figures}",
                    file=sys.stderr,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"emulator throughput: {size:,} bytes ({BIG_DIR}/{BIG_NAME}, generated, seed "
        f"{BIG_SEED}), {runs} runs, {cores} cores, {curl_version.split(' (')[0]}, loopback"
    )
    print()
    print_table(workloads)
    print()
    print("MB = 10^6 bytes; ratio = emulator median / reference median.")
    print("reference: curl reading the same bytes from a local file via file://; the file is hot")
    print("in the page cache, so the reference is a memory-copy ceiling, not a disk figure.")
    print(f"{PARALLEL} ranged GETs: total bytes / time of the slowest of the {PARALLEL} transfers.")
    full = Summary.of(workloads[0].emulator_mbps).median
    verdict = "PASS" if full >= TARGET_MBPS else "FAIL"
    print(
        f"target: full single-stream GET >= {TARGET_MBPS:.0f} MB/s: {verdict} "
        f"(median {full:,.0f} MB/s)"
    )
    return 0


# --- the mount benchmark: data --------------------------------------------------------------

MOUNT_PROJECT = "bench-user/bench"
HUGE_PROJECT = "bench-user/huge"
"""The 100,000-entry folder is served by an emulator of its own: 100,000 more objects in the
main emulator's heap make its garbage collector slow every other listing down."""
QUICK_SIZE = 256 << 20
MOUNT_RUNS = 3
LATENCY_MS = 40.0
MANY_DIR = "many2000"
MANY_COUNT = 2000
HUGE_DIR = "many100k"
HUGE_COUNT = 100_000
FALLBACK_DIR = "many10k"
FALLBACK_COUNT = 10_000
LIST_BUDGET = 150.0
"""Seconds a listing of the 100,000-entry folder may be projected to take (pages x the time
the emulator takes for one page) before the 10,000-entry folder is listed instead."""
BAM_DIR = "bam"
BAM_NAME = "big.bam"
H5_DIR = "hdf5"
H5_NAME = "adata.h5ad"
H5_DATASET = "obsm/array"
"""The largest dataset of the demo's .h5ad (30 x 50 float64, LZF)."""
RATE_LIMIT = 100_000_000
"""The emulator's SB budget per window: a benchmark must not wait for the 1000/300 s window."""

BAM_VERSION = "bam-v1"
"""Bump when the generated BAM changes: the cache directory is named after it."""
BAM_SEED = 20240
BAM_READS = 3_000_000
BAM_MIN_BYTES = 300_000_000
BAM_CHROMS = (
    ("chr1", 15_000_000),
    ("chr2", 13_000_000),
    ("chr3", 12_000_000),
    ("chr4", 10_000_000),
)
BAM_REGION = "chr2:6450001-6550000"
"""100 kb in the middle of chr2 (13 Mbp)."""


def _scattered_regions(count: int = 10) -> tuple[str, ...]:
    """``count`` regions of 1 kb, taking the chromosomes in turn, at 5 %, 15 %, … 95 %."""
    regions = []
    for i in range(count):
        name, length = BAM_CHROMS[i % len(BAM_CHROMS)]
        start = length * (2 * i + 1) // (2 * count) + 1
        regions.append(f"{name}:{start}-{start + 999}")
    return tuple(regions)


BAM_SCATTERED = _scattered_regions()
"""10 regions of 1 kb, spread over the four chromosomes, for one samtools invocation."""
BUILD_TIMEOUT = 1800.0

MOUNT_TIMEOUT = 60.0
"""Seconds for ``remotefs mount`` to say ``ready``, and for it to exit after unmounting."""
TOOL_TIMEOUT = 120.0
"""Seconds for one samtools, ls or h5py run."""
RSS_INTERVAL = 0.05


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


def bam_cache_root() -> Path:
    from remotefs.cli import default_cache_root

    return default_cache_root() / "bench"


def _sam_header() -> str:
    lines = ["@HD\tVN:1.6\tSO:coordinate"]
    lines += [f"@SQ\tSN:{name}\tLN:{length}" for name, length in BAM_CHROMS]
    return "\n".join(lines) + "\n"


def _write_sam(sink: Any) -> None:
    """Deterministic single-end reads (100-150 bp, random qualities), coordinate-sorted.

    A random reference per chromosome; read positions are drawn and sorted per chromosome, so
    the SAM text is already in coordinate order; each read is the reference at its position.
    """
    rng = random.Random(BAM_SEED)
    bases = bytes.maketrans(bytes(range(256)), bytes(b"ACGT"[i & 3] for i in range(256)))
    quals = bytes.maketrans(bytes(range(256)), bytes(35 + i % 39 for i in range(256)))
    total = sum(length for _, length in BAM_CHROMS)
    pool_size = 1 << 20
    sink.write(_sam_header().encode())
    number = 0
    for name, length in BAM_CHROMS:
        ref = rng.randbytes(length).translate(bases).decode()
        pool = rng.randbytes(pool_size).translate(quals).decode()
        count = BAM_READS * length // total
        positions = sorted(rng.randrange(1, length - 150) for _ in range(count))
        batch: list[str] = []
        for pos in positions:
            rlen = rng.randrange(100, 151)
            q = rng.randrange(0, pool_size - 150)
            flag = 16 if rng.random() < 0.5 else 0
            batch.append(
                f"r{number:08d}\t{flag}\t{name}\t{pos}\t60\t{rlen}M\t*\t0\t0\t"
                f"{ref[pos - 1 : pos - 1 + rlen]}\t{pool[q : q + rlen]}\n"
            )
            number += 1
            if len(batch) >= 20_000:
                sink.write("".join(batch).encode())
                batch.clear()
        sink.write("".join(batch).encode())


def ensure_bam() -> Path:
    """The benchmark BAM (+ .bai), built once under ``$XDG_CACHE_HOME/remotefs/bench``."""
    final = bam_cache_root() / BAM_VERSION
    bam = final / BAM_NAME
    if bam.is_file() and (final / f"{BAM_NAME}.bai").is_file():
        print(f"bench: reusing {bam} ({bam.stat().st_size:,} bytes)", file=sys.stderr)
        return bam
    if shutil.which("samtools") is None:
        raise BenchError("samtools is not installed (apt-get install samtools)")
    final.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{BAM_VERSION}.building-", dir=final.parent))
    try:
        t0 = time.monotonic()
        print(f"bench: building {bam} (once; {BAM_READS:,} reads) ...", file=sys.stderr)
        # Relative output path and --no-PG: the file does not depend on where it was built.
        argv = ["samtools", "view", "-b", "--no-PG", "-@2", "-o", BAM_NAME, "-"]
        with open(building / "samtools.log", "wb") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=log, cwd=building)
        assert proc.stdin is not None
        try:
            _write_sam(proc.stdin)
            proc.stdin.close()
            rc = proc.wait(timeout=BUILD_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        if rc != 0:
            tail = (building / "samtools.log").read_text(errors="replace")[-500:]
            raise BenchError(f"samtools view -b failed (exit {rc}): {tail}")
        run_tool(["samtools", "index", BAM_NAME], BUILD_TIMEOUT, cwd=building)
        size = (building / BAM_NAME).stat().st_size
        if size < BAM_MIN_BYTES:
            raise BenchError(f"the generated BAM has {size:,} bytes, fewer than {BAM_MIN_BYTES:,}")
        (building / "samtools.log").unlink()
        shutil.rmtree(final, ignore_errors=True)
        os.rename(building, final)
        print(
            f"bench: built {bam} ({size:,} bytes) in {time.monotonic() - t0:.0f} s",
            file=sys.stderr,
        )
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return bam


def demo_h5ad() -> Path:
    from remotefs.cli import default_cache_root
    from remotefs.emulator.demo import DemoBuildError, build_demo

    try:
        path = build_demo(default_cache_root()) / "hdf5" / H5_NAME
    except DemoBuildError as exc:
        raise BenchError(f"cannot build the demo dataset for its .h5ad: {exc}") from None
    if not path.is_file():
        raise BenchError(f"{path} is missing from the demo dataset")
    return path


def _empty_files(folder: Path, count: int) -> None:
    folder.mkdir()
    width = len(str(count - 1))
    for i in range(count):
        os.close(os.open(folder / f"e{i:0{width}d}", os.O_CREAT | os.O_WRONLY, 0o644))


def write_mount_data(work: Path, size: int, *, bam: Path, h5ad: Path) -> Path:
    data = work / "data"
    (data / BIG_DIR).mkdir(parents=True)
    stub = data / BIG_DIR / f"{BIG_NAME}.generated"
    stub.write_text(json.dumps({"size": size, "seed": BIG_SEED}) + "\n")
    many = data / MANY_DIR
    many.mkdir()
    for i in range(MANY_COUNT):
        (many / f"tiny-{i:04d}.txt").write_text(f"tiny file {i}\n")
    (data / BAM_DIR).mkdir()
    for name in (BAM_NAME, f"{BAM_NAME}.bai"):
        os.symlink(bam.parent / name, data / BAM_DIR / name)  # served from the cache, no copy
    (data / H5_DIR).mkdir()
    shutil.copyfile(h5ad, data / H5_DIR / H5_NAME)
    return data


def write_huge_data(work: Path) -> Path:
    data = work / "data-huge"
    data.mkdir()
    _empty_files(data / HUGE_DIR, HUGE_COUNT)
    _empty_files(data / FALLBACK_DIR, FALLBACK_COUNT)
    return data


def write_local_copy(path: Path, size: int) -> None:
    from remotefs.emulator.content import GeneratedContent

    free = shutil.disk_usage(path.parent).free
    if free < size + (256 << 20):
        raise BenchError(f"{path.parent}: {free:,} bytes free, the local copy needs {size:,}")
    with open(path, "wb") as f:
        for piece in GeneratedContent(size, seed=BIG_SEED).iter_range(0, size):
            f.write(piece)


# --- the mount benchmark: the emulator's controls and the platform ---------------------------


def http_post(url: str, body: Any) -> Any:
    if urlsplit(url).hostname != HOST:
        raise BenchError(f"refusing to post to {url}: not on {HOST}")
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with _OPENER.open(req, timeout=API_TIMEOUT) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise BenchError(f"POST {url}: HTTP {exc.code}: {exc.read()[:300]!r}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise BenchError(f"POST {url}: {exc}") from None


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


class Emulator:
    """One running emulator: its controls, and look-ups in its one SB project."""

    def __init__(self, base: str, pid: int, project: str) -> None:
        self.base = base
        self.pid = pid
        self.project = project

    def latency(self, ms: float) -> None:
        http_post(f"{self.base}/_emulator/config", {"latency_ms": ms})

    def reset(self) -> None:
        http_post(f"{self.base}/_emulator/reset", {})

    def _cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def settle(self, timeout: float = 30.0) -> dict[str, Any]:
        """The stats once the emulator is idle: a response whose client went away is still
        streamed to its end (and counted only then), and must not run into the next
        measurement. Idle: the stats did not change and it used < 10 ms of CPU in 0.2 s."""
        deadline = time.monotonic() + timeout
        stats, cpu = get_json(f"{self.base}/_emulator/stats", {}), self._cpu_seconds()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            again, cpu_again = get_json(f"{self.base}/_emulator/stats", {}), self._cpu_seconds()
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

    def child(self, parent: dict[str, str], name: str) -> dict[str, Any]:
        query = urlencode({**parent, "fields": "_all", "limit": 100})
        items = get_json(f"{self.base}/v2/files?{query}", SB_HEADERS)["items"]
        return _only(items, "SB entry", name=name)

    def find(self, relpath: str) -> dict[str, Any]:
        """The SB item at ``relpath`` in the project, found folder by folder."""
        where = {"project": self.project}
        item: dict[str, Any] = {}
        for name in relpath.split("/"):
            item = self.child(where, name)
            where = {"parent": item["id"]}
        return item

    def signed_url(self, file_id: str) -> str:
        return sb_signed_url(self.base, file_id)

    def page_url(self, folder_id: str, offset: int) -> str:
        query = urlencode({"parent": folder_id, "fields": "_all", "offset": offset, "limit": 100})
        return f"{self.base}/v2/files?{query}"


# --- the mount benchmark: mounting ------------------------------------------------------------


def _mounted_at(path: Path) -> bool:
    """Whether ``path`` is a mount point, from /proc (a dead FUSE mount counts: stat fails)."""
    target = str(path).replace(" ", "\\040")
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f if len(line.split()) > 1)


def _log_tail(log: Path) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-6:])
    except OSError:
        return "(no log)"


@dataclass
class Mounted:
    proc: subprocess.Popen[bytes]
    path: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


def _unmount(m: Mounted) -> None:
    """``fusermount3 -u`` (retried while busy), then wait for the process; by PID only."""
    for attempt in range(10):
        if not _mounted_at(m.path):
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
        m.proc.terminate()
        try:
            rc = m.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            rc = m.proc.wait(timeout=STOP_TIMEOUT)
    if rc != 0:
        print(f"bench: mount {m.pid} exited {rc}: {_log_tail(m.log)}", file=sys.stderr)


@contextmanager
def mounted(
    emu: Emulator, mnt: Path, cache_dir: Path, log: Path, extra: tuple[str, ...] = ()
) -> Iterator[Mounted]:
    """``remotefs mount --foreground`` of the emulator's project; yields once it said ready."""
    from remotefs.ready import NotReady, read_line

    mnt.mkdir(exist_ok=True)
    if _mounted_at(mnt):
        raise BenchError(f"{mnt} is still mounted")
    argv = [sys.executable, "-m", "remotefs", "mount", str(mnt), "--foreground"]
    argv += ["--platform", "sevenbridges", "--api-url", f"{emu.base}/v2", "--project", emu.project]
    argv += ["--cache-dir", str(cache_dir), *extra]
    read_end, write_end = os.pipe()
    env = child_env(SB_AUTH_TOKEN=TOKEN, REMOTEFS_READY_FD=str(write_end))
    try:
        with open(log, "ab") as logfile:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                env=env,
                pass_fds=(write_end,),
            )
    finally:
        os.close(write_end)
    m = Mounted(proc, mnt, log)
    try:
        try:
            answer = read_line(read_end, MOUNT_TIMEOUT)
        except NotReady:
            raise BenchError(
                f"the mount did not say ready in {MOUNT_TIMEOUT:.0f} s: {_log_tail(log)}"
            ) from None
        finally:
            os.close(read_end)
        if answer != "ready":
            raise BenchError(f"the mount failed: {answer or 'no answer'}: {_log_tail(log)}")
        yield m
    finally:
        _unmount(m)


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


# --- the mount benchmark: workloads -----------------------------------------------------------


def dd_mbps(path: Path, size: int) -> float:
    """``dd if=PATH of=/dev/null bs=1M``: MB/s over the wall time of the whole dd."""
    seconds, _, err = run_tool(
        ["dd", f"if={path}", "of=/dev/null", "bs=1M"], 60 + size / MIN_TRANSFER_RATE
    )
    m = re.search(rb"^(\d+) bytes", err, re.MULTILINE)
    if m is None or int(m.group(1)) != size:
        got = m.group(1).decode() if m else "?"
        raise BenchError(f"dd {path}: copied {got} bytes, expected {size}: short read")
    return mbps(size, seconds)


def page_cache_bytes(path: Path) -> int | None:
    """Bytes of ``path`` in the page cache (``fincore``); None without fincore."""
    if shutil.which("fincore") is None:
        return None
    _, out, _ = run_tool(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)], 30)
    return int(out.split()[0])


def httpx_stream_mbps(url: str, size: int) -> float:
    """One streaming GET with httpx on trio, read with ``aiter_raw``: MB/s of the GET alone."""
    import httpx
    import trio

    timeout = 60 + size / MIN_TRANSFER_RATE

    async def fetch() -> tuple[int, float]:
        async with httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(30.0)) as client:
            with trio.fail_after(timeout):
                t0 = time.monotonic()
                got = 0
                async with client.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise BenchError(f"GET {url}: HTTP {response.status_code}")
                    async for piece in response.aiter_raw():
                        got += len(piece)
                return got, time.monotonic() - t0

    try:
        got, seconds = trio.run(fetch)
    except trio.TooSlowError:
        raise BenchError(f"httpx GET of {size:,} bytes did not finish in {timeout:.0f} s") from None
    except httpx.HTTPError as exc:
        raise BenchError(f"httpx GET {url}: {exc}") from None
    if got != size:
        raise BenchError(f"httpx GET: got {got:,} bytes, expected {size:,}")
    return mbps(size, seconds)


def pages_seconds(pages: list[str], expect: int) -> float:
    """Fetch the listing pages one after another with httpx; the wall time."""
    import httpx

    got = 0
    with httpx.Client(trust_env=False, timeout=httpx.Timeout(API_TIMEOUT)) as client:
        t0 = time.monotonic()
        for url in pages:
            response = client.get(url, headers=SB_HEADERS)
            if response.status_code != 200:
                raise BenchError(f"GET {url}: HTTP {response.status_code}")
            got += len(response.json()["items"])
        seconds = time.monotonic() - t0
    if got != expect:
        raise BenchError(f"the {len(pages)} pages held {got} entries, expected {expect}")
    return seconds


H5_CHILD = """
import sys, time
import h5py
t0 = time.monotonic()
with h5py.File(sys.argv[1], "r") as f:
    values = f[sys.argv[2]][()]
print(time.monotonic() - t0, values.nbytes)
"""


def h5py_seconds(path: Path, dataset: str) -> tuple[float, int]:
    """Open ``path`` with h5py and read ``dataset`` whole, in a child; (seconds, bytes read).

    Timed inside the child, after ``import h5py``: the interpreter start is not counted.
    """
    _, out, _ = run_tool([sys.executable, "-c", H5_CHILD, str(path), dataset], TOOL_TIMEOUT)
    seconds, nbytes = out.decode().split()
    return float(seconds), int(nbytes)


_SOCKET_READ = re.compile(rb"^(?:read|recvfrom|recvmsg|readv)\(\d+<(?:TCP|socket)[^>]*>.*= (\d+)$")


def socket_bytes_read(argv: list[str], cwd: Path) -> int | None:
    """Bytes ``argv`` read from its sockets, under ``strace -y`` (untimed); None without strace.

    htslib over HTTP opens a file with an unranged GET and seeks with open-ended ranges, and
    drops each response once it has what it needs; the emulator counts every body to its end,
    so only the client can say what it took in.
    """
    if shutil.which("strace") is None:
        return None
    trace = cwd / "strace.log"
    tracer = ["strace", "-qq", "-y", "-s", "0", "-e", "trace=read,readv,recvfrom,recvmsg"]
    run_tool([*tracer, "-e", "signal=none", "-o", str(trace), *argv], TOOL_TIMEOUT, cwd=cwd)
    total = 0
    with open(trace, "rb") as f:
        for line in f:
            m = _SOCKET_READ.match(line.rstrip())
            if m:
                total += int(m.group(1))
    return total


def samtools_count(target: str, regions: tuple[str, ...], cwd: Path) -> tuple[float, int]:
    """``samtools view -c TARGET REGION…``: (wall seconds, count)."""
    argv = ["samtools", "view", "-c", target, *regions]
    seconds, out, _ = run_tool(argv, TOOL_TIMEOUT, cwd=cwd)
    return seconds, int(out.decode().split()[0])


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


class MountBench:
    """Everything one ``scripts/bench mount`` needs: paths, the emulator, the figures."""

    def __init__(
        self,
        emulator: Emulator,
        work: Path,
        size: int,
        shm_copy: Path,
        huge: Emulator | None = None,
    ) -> None:
        self.emu = emulator
        self.huge = huge
        self.work = work
        self.size = size
        self.shm_copy = shm_copy
        self.mnt = work / "mnt"
        self.figures = Figures()
        self._serial = 0
        self.big = emulator.find(f"{BIG_DIR}/{BIG_NAME}")
        if self.big.get("size") != size:
            raise BenchError(f"SB lists {BIG_NAME} at {self.big.get('size')} bytes, not {size}")
        self.bam = emulator.find(f"{BAM_DIR}/{BAM_NAME}")
        self.bai = emulator.find(f"{BAM_DIR}/{BAM_NAME}.bai")
        self.many = emulator.find(MANY_DIR)
        self.h5_local = work / "data" / H5_DIR / H5_NAME
        self.list_dir: str | None = None
        self.list_count = 0

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
        emu: Emulator | None = None,
    ) -> Iterator[Mounted]:
        """Mount with no latency (the mount's own start-up checks are not the workload), then
        set ``latency_ms`` and zero the counters; the latency goes back to 0 afterwards."""
        emu = emu or self.emu
        emu.latency(0)
        with mounted(emu, self.mnt, cache, log, extra) as m:
            emu.latency(latency_ms)
            emu.reset()
            try:
                yield m
            finally:
                emu.latency(0)

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

    # --- sequential reads -----------------------------------------------------------------

    def sequential(self, run: int) -> None:
        f = self.figures
        mounted_file = self.mnt / BIG_DIR / BIG_NAME

        def on_mount() -> None:
            cache, log = self.fresh("seq")
            with self.mount(cache, log, 0) as m:
                with RssSampler(m.pid) as rss:
                    f.add("seq.cold", dd_mbps(mounted_file, self.size))
                f.add("seq.rss", rss.peak / 1e6)
                f.add("seq.hwm", proc_status(m.pid).get("VmHWM", 0) / 1e6)
                f.add("seq.cold.mb", self.emu.counts().storage_mb)
                resident = page_cache_bytes(mounted_file)
                if resident is not None:
                    f.add("seq.resident", resident / 1e6)
                self.emu.reset()
                f.add("seq.warm", dd_mbps(mounted_file, self.size))
                f.add("seq.warm.mb", self.emu.counts().storage_mb)
            with self.mount(cache, log, 0):
                f.add("seq.disk", dd_mbps(mounted_file, self.size))
                f.add("seq.disk.mb", self.emu.counts().storage_mb)
            shutil.rmtree(cache, ignore_errors=True)
            cache, log = self.fresh("seq40")
            with self.mount(cache, log, LATENCY_MS):
                f.add("seq.cold40", dd_mbps(mounted_file, self.size))
                f.add("seq.cold40.requests", self.emu.counts().storage_requests)
            shutil.rmtree(cache, ignore_errors=True)

        def references() -> None:
            url = self.emu.signed_url(self.big["id"])  # not timed, as the mount's first call
            f.add("seq.http", httpx_stream_mbps(url, self.size))
            f.add("seq.shm", dd_mbps(self.shm_copy, self.size))

        both = (on_mount, references) if run % 2 == 0 else (references, on_mount)
        for part in both:
            part()

    # --- BAM regions ----------------------------------------------------------------------

    def bam_regions(self, key: str, regions: tuple[str, ...], run: int) -> None:
        f = self.figures

        def on_mount() -> int:
            cache, log = self.fresh(key)
            with self.mount(cache, log, LATENCY_MS):
                scratch = Path(tempfile.mkdtemp(dir=self.work))
                target = str(self.mnt / BAM_DIR / BAM_NAME)
                seconds, count = samtools_count(target, regions, scratch)
                counts = self.emu.counts()
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(scratch, ignore_errors=True)
            f.add(f"{key}.mount", seconds)
            f.add(f"{key}.mount.mb", counts.storage_mb)
            f.add(f"{key}.mount.requests", counts.storage_requests)
            f.add(f"{key}.mount.api", counts.api_requests)
            return count

        def over_http() -> int:
            target = (
                f"{self.emu.signed_url(self.bam['id'])}##idx##{self.emu.signed_url(self.bai['id'])}"
            )
            # A fresh working directory: htslib may keep a downloaded index there.
            scratch = Path(tempfile.mkdtemp(dir=self.work))
            self.emu.latency(LATENCY_MS)
            self.emu.reset()
            try:
                seconds, count = samtools_count(target, regions, scratch)
                counts = self.emu.counts()
            finally:
                self.emu.latency(0)
                shutil.rmtree(scratch, ignore_errors=True)
            f.add(f"{key}.http", seconds)
            f.add(f"{key}.http.mb", counts.storage_mb)
            f.add(f"{key}.http.requests", counts.storage_requests)
            f.add(f"{key}.http.api", counts.api_requests)
            if run == 0:  # once: what samtools itself read from its sockets (a traced run)
                scratch = Path(tempfile.mkdtemp(dir=self.work))
                argv = ["samtools", "view", "-c", target, *regions]
                taken = socket_bytes_read(argv, scratch)
                self.emu.settle()
                shutil.rmtree(scratch, ignore_errors=True)
                if taken is not None:
                    f.add(f"{key}.http.read_mb", taken / 1e6)
            return count

        if run % 2 == 0:
            mount_count, http_count = on_mount(), over_http()
        else:
            http_count, mount_count = over_http(), on_mount()
        if mount_count != http_count:
            raise BenchError(
                f"samtools counted {mount_count} reads through the mount, {http_count} over HTTP"
            )
        if mount_count == 0:
            raise BenchError(f"samtools counted no reads in {' '.join(regions)}")
        f.notes[f"{key}.reads"] = f"{mount_count:,} reads"

    # --- ls -l ----------------------------------------------------------------------------

    def listing(self, run: int) -> None:
        f = self.figures
        pages = [self.emu.page_url(self.many["id"], o) for o in range(0, MANY_COUNT, 100)]

        def on_mount() -> None:
            cache, log = self.fresh("ls")
            with self.mount(cache, log, LATENCY_MS):
                argv = ["ls", "-l", str(self.mnt / MANY_DIR)]
                seconds, out, _ = run_tool(argv, TOOL_TIMEOUT)
                counts = self.emu.counts()
                # Again on the same mount: listing and attributes cached, so what is left is
                # the mount's per-entry cost (lstat, 2 getxattr per entry; readdir).
                f.add("ls.warm", run_tool(argv, TOOL_TIMEOUT)[0])
            shutil.rmtree(cache, ignore_errors=True)
            lines = out.count(b"\n")
            if lines != MANY_COUNT + 1:  # "total N" and one line per entry
                raise BenchError(f"ls -l printed {lines} lines, expected {MANY_COUNT + 1}")
            f.add("ls.mount", seconds)
            f.add("ls.mount.api", counts.api_requests)

        def reference() -> None:
            f.add("ls.http0", pages_seconds(pages, MANY_COUNT))
            self.emu.latency(LATENCY_MS)
            try:
                f.add("ls.http", pages_seconds(pages, MANY_COUNT))
            finally:
                self.emu.latency(0)

        for part in (on_mount, reference) if run % 2 == 0 else (reference, on_mount):
            part()

    # --- h5py -----------------------------------------------------------------------------

    def hdf5(self, run: int) -> None:
        f = self.figures

        def on_mount() -> None:
            cache, log = self.fresh("h5")
            with self.mount(cache, log, LATENCY_MS):
                seconds, nbytes = h5py_seconds(self.mnt / H5_DIR / H5_NAME, H5_DATASET)
                counts = self.emu.counts()
            shutil.rmtree(cache, ignore_errors=True)
            f.add("h5.mount", seconds)
            f.add("h5.mount.requests", counts.storage_requests)
            f.add("h5.mount.mb", counts.storage_mb)
            f.add("h5.mount.api", counts.api_requests)
            f.notes["h5.bytes"] = f"{nbytes:,} bytes of data"

        def local() -> None:
            f.add("h5.local", h5py_seconds(self.h5_local, H5_DATASET)[0])

        for part in (on_mount, local) if run % 2 == 0 else (local, on_mount):
            part()

    # --- a huge folder ----------------------------------------------------------------------

    def choose_list_dir(self) -> None:
        """The 100,000-entry folder, unless the emulator would take too long to list it."""
        assert self.huge is not None
        folder = self.huge.find(HUGE_DIR)
        t0 = time.monotonic()
        get_json(self.huge.page_url(folder["id"], HUGE_COUNT // 2), SB_HEADERS)
        page = time.monotonic() - t0
        projected = page * (HUGE_COUNT // 100)
        if projected <= LIST_BUDGET:
            self.list_dir, self.list_count = HUGE_DIR, HUGE_COUNT
            return
        self.list_dir, self.list_count = FALLBACK_DIR, FALLBACK_COUNT
        self.figures.notes["list.fallback"] = (
            f"the emulator takes {page:.2f} s per page of the {HUGE_COUNT:,}-entry folder, so "
            f"one listing would take ~{projected / 60:.0f} min: listed the {FALLBACK_COUNT:,}-"
            "entry folder instead"
        )
        print(f"bench: {self.figures.notes['list.fallback']}", file=sys.stderr)

    def huge_listing(self, run: int) -> None:
        assert self.list_dir is not None and self.huge is not None
        f = self.figures
        timeout = max(TOOL_TIMEOUT, 600.0)
        cache, log = self.fresh("list")
        # A long operation deadline: this workload measures memory, not time.
        with self.mount(cache, log, 0, ("--timeout", f"{timeout:.0f}"), self.huge) as m:
            run_tool(["ls", str(self.mnt)], TOOL_TIMEOUT)
            time.sleep(0.5)
            before = proc_status(m.pid)["VmRSS"]
            seconds, out, _ = run_tool(["ls", "-f", str(self.mnt / self.list_dir)], timeout + 30)
            time.sleep(1.0)
            status = proc_status(m.pid)
        shutil.rmtree(cache, ignore_errors=True)
        entries = sum(1 for name in out.split(b"\n") if name not in (b"", b".", b".."))
        if entries != self.list_count:
            raise BenchError(f"ls -f listed {entries:,} entries, expected {self.list_count:,}")
        f.add("list.per_entry", (status["VmRSS"] - before) / entries / 1e3)
        f.add("list.seconds", seconds)
        f.add("list.before", before / 1e6)
        f.add("list.hwm", status["VmHWM"] / 1e6)


# --- the mount benchmark: the table -------------------------------------------------------------


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
            s = f.get(key) if key else None
            if s is None:
                return "-"
            return f"{s.median:{self.fmt}} ({s.low:{self.fmt}}-{s.high:{self.fmt}}) {self.unit}"

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


def _median(f: Figures, key: str) -> float:
    s = f.get(key)
    return s.median if s is not None else float("nan")


def _ratio_at_least(minimum: float) -> Callable[[Row, Figures], bool]:
    return lambda row, f: (row.ratio(f) or 0.0) >= minimum


def _ratio_at_most(maximum: float) -> Callable[[Row, Figures], bool]:
    return lambda row, f: (row.ratio(f) or float("inf")) <= maximum


def mount_rows(size: int, list_count: int) -> list[Row]:
    label = f"{size >> 30} GiB" if size >= 1 << 30 else f"{size >> 20} MiB"
    at_most_half = _ratio_at_most(0.5)
    return [
        Row(
            f"cold sequential read, {label}, dd bs=1M",
            "sequential",
            "seq.cold",
            "MB/s",
            ",.0f",
            "httpx+trio streaming GET",
            "seq.http",
            ">= 0.9x",
            _ratio_at_least(0.9),
        ),
        Row(
            f"cold sequential read, {label}, +40 ms/request",
            "sequential",
            "seq.cold40",
            "MB/s",
            ",.0f",
            "the cold read at 0 ms",
            "seq.cold",
            ">= 0.8x",
            _ratio_at_least(0.8),
        ),
        Row(
            "warm re-read, same mount",
            "sequential",
            "seq.warm",
            "MB/s",
            ",.0f",
            "dd of a copy in /dev/shm",
            "seq.shm",
            ">= 0.5x",
            _ratio_at_least(0.5),
        ),
        Row(
            "re-read after remount (disk cache)",
            "sequential",
            "seq.disk",
            "MB/s",
            ",.0f",
            "the cold read",
            "seq.cold",
            ">= 1.5x",
            _ratio_at_least(1.5),
        ),
        Row(
            "samtools view -c, 100 kb region, cold, 40 ms",
            "bam-region",
            "bam1.mount",
            "s",
            ".2f",
            "samtools over HTTP",
            "bam1.http",
            "<= 0.5x; <= 6 MB",
            lambda row, f: at_most_half(row, f) and _median(f, "bam1.mount.mb") <= 6.0,
        ),
        Row(
            "samtools view -c, 10 x 1 kb regions, cold, 40 ms",
            "bam-scattered",
            "bam10.mount",
            "s",
            ".2f",
            "samtools over HTTP",
            "bam10.http",
            "<= 0.5x",
            at_most_half,
        ),
        Row(
            f"ls -l of {MANY_COUNT:,} entries, cold, 40 ms",
            "ls",
            "ls.mount",
            "s",
            ".2f",
            "20 pages in series, httpx",
            "ls.http",
            "< 0.5 s",
            lambda row, f: _median(f, "ls.mount") < 0.5,
        ),
        Row(
            f"h5py, {H5_DATASET} of {H5_NAME}, cold, 40 ms",
            "h5py",
            "h5.mount",
            "s",
            ".3f",
            "h5py on a local copy",
            "h5.local",
            "report",
            None,
        ),
        Row(
            f"peak RSS of the mount, cold {label} read",
            "sequential",
            "seq.hwm",
            "MB",
            ",.0f",
            target="<= 250 MB",
            passes=lambda row, f: max(f.values["seq.hwm"] + f.values.get("seq.rss", [])) <= 250,
        ),
        Row(
            f"RSS per entry, {list_count:,}-entry folder" if list_count else "RSS per entry",
            "huge-listing",
            "list.per_entry",
            "KB",
            ".2f",
            target="<= 2 KB",
            passes=lambda row, f: _median(f, "list.per_entry") <= 2.0,
        ),
    ]


def print_rows(header: list[str], rows: list[list[str]], right: set[int]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return " | ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    print(line(header))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def print_mount_report(bench: MountBench, runs: int, quick: bool) -> None:
    f = bench.figures
    rows = mount_rows(bench.size, bench.list_count)
    print_rows(
        ["#", "workload", "mount", "reference (same run)", "reference", "ratio", "target", ""],
        [[str(i + 1), *row.cells(f)] for i, row in enumerate(rows)],
        right={0, 2, 4, 5},
    )
    print()
    print("Requests to the emulator, median (min-max) per run; storage = signed-URL GETs:")
    counts = []
    for key, what in (("bam1", "100 kb region"), ("bam10", "10 x 1 kb regions")):
        for side, name in (("mount", "mount"), ("http", "samtools over HTTP")):
            counts.append(_count_row(f, f"{key}.{side}", f"{what}, {name}"))
    counts.append(_count_row(f, "h5.mount", f"h5py {H5_DATASET}, mount"))
    print_rows(
        ["workload", "storage requests", "storage MB", "MB read by samtools", "API requests"],
        counts,
        right={1, 2, 3, 4},
    )
    print(
        "storage MB: the emulator's sb.storage byte counter. On the HTTP side it is far more "
        "than samtools used: htslib opens with an unranged GET and seeks with open-ended "
        "ranges (bytes=N-), dropping each response once it has what it needs, and the emulator "
        "streams and counts every body to its end after the client has gone. 'MB read by "
        "samtools' is what samtools read from its sockets (one untimed run under strace -y). "
        "The mount sends only bounded ranges, so its counter is exact."
    )
    print()
    print("Notes:")

    def cells(key: str, fmt: str = ",.0f") -> str:
        s = f.get(key)
        return "-" if s is None else f"{s.median:{fmt}}"

    print(
        f"- MB = 10^6 bytes, KB = 10^3 bytes; medians of {runs} runs, each cold figure on a fresh "
        "mount with a fresh cache directory (the mount's page cache dies with it)."
    )
    print(
        f"- rows 1-4: the cold read fetched {cells('seq.cold.mb')} MB from the emulator, the warm "
        f"re-read {cells('seq.warm.mb')} MB, the re-read after remounting {cells('seq.disk.mb')} "
        f"MB; at 40 ms the cold read took {cells('seq.cold40.requests')} storage requests. The "
        "disk-cache re-read reads cache files the host's page cache still holds (the host's "
        f"caches are never dropped). When the warm re-read began, {cells('seq.resident')} MB "
        "of the file was in the page cache (fincore); the rest goes through the mount again."
    )
    print(
        f"- row 9: VmHWM after the cold read (shown); the highest VmRSS sampled every "
        f"{RSS_INTERVAL * 1000:.0f} ms during it was {cells('seq.rss')} MB. Judged on the worst "
        "run."
    )
    print(
        "- rows 5-6: timed from a cold mount, so the mount's listing of bam/ and its "
        f"download_info calls are included ({cells('bam1.mount.api')} API requests, each "
        f"{LATENCY_MS:.0f} ms; the mount lists / as it starts, at 0 ms); samtools over HTTP gets "
        "its two signed URLs untimed "
        f"(URL##idx##URL). One samtools invocation with all regions on both sides. Row 5: "
        f"{BAM_REGION}, {f.notes.get('bam1.reads', '?')}; row 6: "
        f"{', '.join(BAM_SCATTERED)}, {f.notes.get('bam10.reads', '?')}."
    )
    print(
        f"- row 7: the emulator alone serves the 20 pages in series in {cells('ls.http0', '.2f')} "
        f"s at 0 ms (it is single-threaded: that time is a floor for any client); the mount "
        f"made {cells('ls.mount.api')} API requests; a second `ls -l` on the same mount "
        f"(listing cached) took {cells('ls.warm', '.2f')} s."
    )
    print(
        f"- row 8: timed inside a child after `import h5py` (open + read of "
        f"{f.notes.get('h5.bytes', '?')})."
    )
    if quick:
        print("- row 10: skipped by --quick.")
    elif f.get("list.per_entry") is not None:
        print(
            "- row 10: (VmRSS after - before) / entries after one `ls -f` of the folder (served "
            "by an emulator of its own), no latency; the listing took "
            f"{cells('list.seconds', '.1f')} s, VmRSS before {cells('list.before')} MB, VmHWM "
            f"after {cells('list.hwm')} MB."
        )
    if "list.fallback" in f.notes:
        print(f"- row 10: {f.notes['list.fallback']}.")
    print(
        f"- the emulator runs with --rate-limit {RATE_LIMIT:,} (no SB rate-limit waits); "
        "latency is set with POST /_emulator/config after each mount said ready."
    )
    if f.errors:
        print("- *: some runs of that workload failed; its figures are those of the other runs.")
    for group, errors in f.errors.items():
        for error in errors:
            print(f"- ERROR in {group}, {error[:600]}")


def _count_row(f: Figures, prefix: str, name: str) -> list[str]:
    def cell(key: str, fmt: str) -> str:
        s = f.get(key)
        if s is None:
            return "-"
        return f"{s.median:{fmt}} ({s.low:{fmt}}-{s.high:{fmt}})"

    return [
        name,
        cell(f"{prefix}.requests", ",.0f"),
        cell(f"{prefix}.mb", ",.2f"),
        cell(f"{prefix}.read_mb", ",.2f"),
        cell(f"{prefix}.api", ",.0f"),
    ]


WORKLOAD_GROUPS: dict[str, Callable[[MountBench, int], None]] = {
    "sequential": MountBench.sequential,
    "bam-region": lambda bench, run: bench.bam_regions("bam1", (BAM_REGION,), run),
    "bam-scattered": lambda bench, run: bench.bam_regions("bam10", BAM_SCATTERED, run),
    "ls": MountBench.listing,
    "h5py": MountBench.hdf5,
    "huge-listing": MountBench.huge_listing,  # not with --quick
}
"""What ``--only`` names, and what each runs (once per run)."""


def cmd_mount(args: argparse.Namespace) -> int:
    quick: bool = args.quick
    size = QUICK_SIZE if quick else DEFAULT_SIZE
    runs: int = args.runs
    for tool in ("fusermount3", "samtools", "dd", "ls"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed")
    if not os.path.exists("/dev/fuse"):
        raise BenchError("no /dev/fuse: cannot mount")
    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    bam = ensure_bam()
    h5ad = demo_h5ad()
    work = Path(tempfile.mkdtemp(prefix="remotefs-bench-"))
    shm = Path(tempfile.mkdtemp(prefix="remotefs-bench-", dir="/dev/shm"))
    bench: MountBench | None = None
    try:
        data = write_mount_data(work, size, bam=bam, h5ad=h5ad)
        names = [
            name
            for name in WORKLOAD_GROUPS
            if (args.only is None or name in args.only) and not (quick and name == "huge-listing")
        ]
        huge_data = write_huge_data(work) if "huge-listing" in names else None
        shm_copy = shm / "local.bin"
        write_local_copy(shm_copy, size)
        print(f"bench: data ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        with ExitStack() as stack:
            extra = ("--project", MOUNT_PROJECT, "--rate-limit", str(RATE_LIMIT))
            emu = Emulator(*stack.enter_context(running_emulator(data, work, extra)), MOUNT_PROJECT)
            huge = None
            if huge_data is not None:
                extra = ("--project", HUGE_PROJECT, "--rate-limit", str(RATE_LIMIT))
                started = stack.enter_context(running_emulator(huge_data, work, extra, "huge"))
                huge = Emulator(*started, HUGE_PROJECT)
            bench = MountBench(emu, work, size, shm_copy, huge)
            spot_check(emu.signed_url(bench.big["id"]), {}, shm_copy, size)
            groups = [(name, functools.partial(WORKLOAD_GROUPS[name], bench)) for name in names]
            if huge is not None:
                bench.choose_list_dir()
            for run in range(runs):
                for name, fn in groups:
                    bench.group(name, fn, run)
    finally:
        mnt = work / "mnt"
        if _mounted_at(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, timeout=30)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)

    assert bench is not None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    samtools = run_tool(["samtools", "--version"], 10)[1].decode(errors="replace").split("\n")[0]
    print(
        f"mount benchmark: {size:,}-byte {BIG_DIR}/{BIG_NAME}, {bam.stat().st_size:,}-byte BAM, "
        f"{runs} runs{' (--quick)' if quick else ''}, {cores} cores, {samtools}, "
        f"kernel {os.uname().release}, loopback, {time.monotonic() - t0:.0f} s in all; "
        f"1-min load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    print()
    print_mount_report(bench, runs, quick)
    return 1 if bench.figures.errors else 0


# --- command line ---------------------------------------------------------------------------


def _positive(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUB-COMMAND")
    p = sub.add_parser("emulator", help="the emulator's own download throughput, vs file://")
    p.add_argument("--runs", type=_positive(1), default=DEFAULT_RUNS, help="default %(default)s")
    p.add_argument(
        "--size",
        type=_positive(PARALLEL),
        default=DEFAULT_SIZE,
        help="bytes of the generated file (default %(default)s, the demo's 1 GiB)",
    )
    p.set_defaults(func=cmd_emulator)
    m = sub.add_parser("mount", help="workloads through a real mount, each vs a reference")
    m.add_argument(
        "--runs",
        type=_positive(3),
        default=MOUNT_RUNS,
        help="runs of every workload, at least 3 (default %(default)s)",
    )
    m.add_argument(
        "--quick",
        action="store_true",
        help=f"a {QUICK_SIZE >> 20} MiB file instead of 1 GiB; skip the 100,000-entry folder",
    )
    m.add_argument(
        "--only",
        action="append",
        choices=list(WORKLOAD_GROUPS),
        help="run only this group of workloads (repeatable); the others' rows show '-'",
    )
    m.set_defaults(func=cmd_mount)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        return int(args.func(args))
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
