"""``scripts/bench emulator [--runs N] [--size BYTES]``: the emulator's own throughput.

It measures how fast the emulator itself serves bytes over loopback HTTP, so that a later
benchmark of the mount can tell whether the mount or the emulator is the bottleneck. It builds
a data tree holding the demo's generated file (``big/random-1GiB.bin``, seed 1, bytes made on
demand by the emulator), writes the same bytes to a local file, starts ``python -m remotefs
emulator`` on 127.0.0.1 and times ``curl`` on three workloads, each against a reference
measured in the same loop iteration:

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
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from bench.common import (
    BIG_NAME,
    BIG_PATH,
    BIG_SEED,
    MIN_TRANSFER_RATE,
    ODM_HEADERS,
    STOP_TIMEOUT,
    BenchError,
    SbProject,
    Summary,
    get_json,
    mbps,
    print_rows,
    running_emulator,
    spot_check,
    write_big_copy,
    write_big_stub,
)

DEFAULT_RUNS = 5
TARGET_MBPS = 600.0
PARALLEL = 4


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


def single(job: CurlJob) -> float:
    return mbps(job.expect_bytes, run_curls([job])[0])


def parallel(jobs: list[CurlJob]) -> float:
    times = run_curls(jobs)
    return mbps(sum(j.expect_bytes for j in jobs), max(times))


def ranged_jobs(url: str, size: int) -> list[CurlJob]:
    return [CurlJob(url, b - a + 1, byte_range=(a, b)) for a, b in quarters(size)]


# --- the workloads --------------------------------------------------------------------------


@dataclass
class Workload:
    name: str
    emulator: Callable[[], float]
    """One emulator measurement, MB/s."""
    reference: Callable[[], float]
    """One reference measurement, MB/s."""
    emulator_mbps: list[float] = field(default_factory=list)
    reference_mbps: list[float] = field(default_factory=list)


def odm_download_url(base: str) -> str:
    query = urlencode({"filter": f"genestack:name={BIG_NAME}"})
    data = get_json(f"{base}/api/v1/as-user/files?{query}", ODM_HEADERS)["data"]
    if len(data) != 1:
        raise BenchError(f"ODM filter genestack:name={BIG_NAME} matched {len(data)} files")
    return f"{base}/api/v1/as-user/files/{data[0]['genestack:accession']}/download"


def emulator_workloads(base: str, local: Path, size: int) -> list[Workload]:
    project = SbProject.the_one(base)
    file_id = str(project.find_big(size)["id"])
    odm_url = odm_download_url(base)
    spot_check(project.signed_url(file_id), {}, local, size)
    spot_check(odm_url, ODM_HEADERS, local, size)
    local_url = local.resolve().as_uri()
    odm_headers = tuple(f"{k}: {v}" for k, v in ODM_HEADERS.items())

    def sb_full() -> float:  # a fresh signed URL each time, as a client would; not timed
        return single(CurlJob(project.signed_url(file_id), size))

    def sb_ranged() -> float:
        return parallel(ranged_jobs(project.signed_url(file_id), size))

    return [
        Workload(
            "SB signed URL, full GET, 1 stream",
            sb_full,
            lambda: single(CurlJob(local_url, size)),
        ),
        Workload(
            f"SB signed URL, {PARALLEL} ranged GETs at once",
            sb_ranged,
            lambda: parallel(ranged_jobs(local_url, size)),
        ),
        Workload(
            "ODM download route, full GET",
            lambda: single(CurlJob(odm_url, size, headers=odm_headers)),
            lambda: single(CurlJob(local_url, size)),
        ),
    ]


def print_table(workloads: list[Workload]) -> None:
    rows = []
    for w in workloads:
        emu, ref = Summary.of(w.emulator_mbps), Summary.of(w.reference_mbps)
        rows.append([w.name, emu.cell(), ref.cell(), f"{emu.median / ref.median:.2f}"])
    print_rows(
        ["workload", "emulator MB/s median (min-max)", "reference MB/s median (min-max)", "ratio"],
        rows,
        right={1, 2, 3},
    )


def main(runs: int, size: int) -> int:
    if shutil.which("curl") is None:
        raise BenchError("curl is not installed")
    curl_version = subprocess.run(
        ["curl", "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.split("\n", 1)[0]
    work = Path(tempfile.mkdtemp(prefix="remotefs-bench-"))
    try:
        t0 = time.monotonic()
        data, local = work / "data", work / "local.bin"
        write_big_stub(data, size)
        write_big_copy(local, size, headroom=64 << 20)
        print(f"bench: wrote {size:,} bytes in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        with running_emulator(data, work) as emulator:
            workloads = emulator_workloads(emulator.url, local, size)
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
        f"emulator throughput: {size:,} bytes ({BIG_PATH}, generated, seed "
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
