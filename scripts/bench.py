"""Benchmarks of remotefs, run as ``scripts/bench SUB-COMMAND`` (only ``emulator`` so far).

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

Exit status: 0 whatever the figures (a benchmark reports, it does not fail CI); 1 if something
broke (the emulator did not start, a transfer came back short, ...); 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
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
from contextlib import contextmanager
from dataclasses import dataclass
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
def running_emulator(data: Path, work: Path) -> Iterator[str]:
    """Start ``python -m remotefs emulator`` on loopback; yield its base URL; always stop it."""
    log = work / "emulator.log"
    env = dict(os.environ, REMOTEFS_EMULATOR_TOKENS=TOKEN)
    argv = [sys.executable, "-m", "remotefs", "emulator", "--data", str(data)]
    argv += ["--host", HOST, "--port", "0"]
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
        yield url
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
        with running_emulator(data, work) as base:
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
