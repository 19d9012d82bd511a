"""Workload groups ``bam-region`` and ``bam-scattered``: samtools region queries on a BAM.

``samtools view -c`` through a cold mount at 40 ms per request, of one 100 kb region
(``bam-region``) and of 10 scattered 1 kb regions in one invocation (``bam-scattered``), vs
samtools reading the BAM over HTTP itself (``URL##idx##URL`` of two signed URLs, fetched
untimed), at the same latency. The mount side is timed from a cold mount, so its listing of
``bam/`` and its ``download_info`` calls are included. Both sides must count the same reads.

Requests and bytes come from the emulator's counters; what samtools itself read from its
sockets is measured once, in an untimed run under ``strace -y``: htslib over HTTP opens with
an unranged GET and seeks with open-ended ranges, dropping each response once it has what it
needs, while the emulator streams and counts every body to its end.

The BAM: >= 300 MB, coordinate-sorted and indexed, 3,000,000 deterministic single-end reads
on four chromosomes, generated once under ``$XDG_CACHE_HOME/remotefs/bench`` (~20 s).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from bench.built import BUILD_TIMEOUT, build_once, feed
from bench.common import BenchError
from bench.harness import (
    LATENCY_MS,
    TOOL_TIMEOUT,
    Figures,
    MountBench,
    Row,
    RowNumbers,
    count_row,
    ratio_at_most,
    run_tool,
)

REGION_GROUP = "bam-region"
SCATTERED_GROUP = "bam-scattered"

BAM_DIR = "bam"
BAM_NAME = "big.bam"
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

REGION = "chr2:6450001-6550000"
"""100 kb in the middle of chr2 (13 Mbp)."""


def _scattered_regions(count: int = 10) -> tuple[str, ...]:
    """``count`` regions of 1 kb, taking the chromosomes in turn, at 5 %, 15 %, … 95 %."""
    regions = []
    for i in range(count):
        name, length = BAM_CHROMS[i % len(BAM_CHROMS)]
        start = length * (2 * i + 1) // (2 * count) + 1
        regions.append(f"{name}:{start}-{start + 999}")
    return tuple(regions)


SCATTERED = _scattered_regions()
"""10 regions of 1 kb, spread over the four chromosomes, for one samtools invocation."""


# --- the BAM --------------------------------------------------------------------------------


def _sam_header() -> str:
    lines = ["@HD\tVN:1.6\tSO:coordinate"]
    lines += [f"@SQ\tSN:{name}\tLN:{length}" for name, length in BAM_CHROMS]
    return "\n".join(lines) + "\n"


def _write_sam(sink: IO[bytes]) -> None:
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

    def build(building: Path) -> None:
        # Relative output path and --no-PG: the file does not depend on where it was built.
        feed(
            ["samtools", "view", "-b", "--no-PG", "-@2", "-o", BAM_NAME, "-"], _write_sam, building
        )
        run_tool(["samtools", "index", BAM_NAME], BUILD_TIMEOUT, cwd=building)

    return build_once(
        BAM_VERSION,
        BAM_NAME,
        ".bai",
        {"samtools": "samtools"},
        f"{BAM_READS:,} reads",
        BAM_MIN_BYTES,
        build,
    )


def write_data(data: Path, bam: Path) -> None:
    """``data/bam/``: links to the built BAM and its index (served from the cache, no copy)."""
    (data / BAM_DIR).mkdir()
    for name in (BAM_NAME, f"{BAM_NAME}.bai"):
        os.symlink(bam.parent / name, data / BAM_DIR / name)


# --- samtools -------------------------------------------------------------------------------

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


class Regions:
    """One run of a group: ``regions`` through the mount and over HTTP, figures ``KEY.*``."""

    def __init__(self, bench: MountBench, key: str, regions: tuple[str, ...]) -> None:
        self.bench = bench
        self.key = key
        self.regions = regions
        self.bam = bench.emu.find(f"{BAM_DIR}/{BAM_NAME}")
        self.bai = bench.emu.find(f"{BAM_DIR}/{BAM_NAME}.bai")

    def __call__(self, run: int) -> None:
        if run % 2 == 0:
            mount_count, http_count = self.on_mount(), self.over_http(run)
        else:
            http_count, mount_count = self.over_http(run), self.on_mount()
        if mount_count != http_count:
            raise BenchError(
                f"samtools counted {mount_count} reads through the mount, {http_count} over HTTP"
            )
        if mount_count == 0:
            raise BenchError(f"samtools counted no reads in {' '.join(self.regions)}")
        self.bench.figures.notes[f"{self.key}.reads"] = f"{mount_count:,} reads"

    def on_mount(self) -> int:
        bench, f, key = self.bench, self.bench.figures, self.key
        with bench.cold_mount(key, LATENCY_MS):
            scratch = Path(tempfile.mkdtemp(dir=bench.work))
            target = str(bench.mnt / BAM_DIR / BAM_NAME)
            seconds, count = samtools_count(target, self.regions, scratch)
            counts = bench.emu.counts()
        shutil.rmtree(scratch, ignore_errors=True)
        f.add(f"{key}.mount", seconds)
        f.add(f"{key}.mount.mb", counts.storage_mb)
        f.add(f"{key}.mount.requests", counts.storage_requests)
        f.add(f"{key}.mount.api", counts.api_requests)
        return count

    def over_http(self, run: int) -> int:
        bench, emu, f, key = self.bench, self.bench.emu, self.bench.figures, self.key
        target = f"{emu.signed_url(self.bam['id'])}##idx##{emu.signed_url(self.bai['id'])}"
        # A fresh working directory: htslib may keep a downloaded index there.
        scratch = Path(tempfile.mkdtemp(dir=bench.work))
        emu.latency(LATENCY_MS)
        emu.reset()
        try:
            seconds, count = samtools_count(target, self.regions, scratch)
            counts = emu.counts()
        finally:
            emu.latency(0)
            shutil.rmtree(scratch, ignore_errors=True)
        f.add(f"{key}.http", seconds)
        f.add(f"{key}.http.mb", counts.storage_mb)
        f.add(f"{key}.http.requests", counts.storage_requests)
        f.add(f"{key}.http.api", counts.api_requests)
        if run == 0:  # once: what samtools itself read from its sockets (a traced run)
            scratch = Path(tempfile.mkdtemp(dir=bench.work))
            argv = ["samtools", "view", "-c", target, *self.regions]
            taken = socket_bytes_read(argv, scratch)
            emu.settle()
            shutil.rmtree(scratch, ignore_errors=True)
            if taken is not None:
                f.add(f"{key}.http.read_mb", taken / 1e6)
        return count


GROUPS: dict[str, Callable[[MountBench], Regions]] = {
    REGION_GROUP: lambda bench: Regions(bench, "bam1", (REGION,)),
    SCATTERED_GROUP: lambda bench: Regions(bench, "bam10", SCATTERED),
}
"""The two groups: what ``--only`` names, and how each is set up for a session."""


# --- the report -----------------------------------------------------------------------------


def rows() -> list[Row]:
    at_most_half = ratio_at_most(0.5)
    return [
        Row(
            "samtools view -c, 100 kb region, cold, 40 ms",
            REGION_GROUP,
            "bam1.mount",
            "s",
            ".2f",
            "samtools over HTTP",
            "bam1.http",
            "<= 0.5x; <= 6 MB",
            lambda row, f: at_most_half(row, f) and f.median("bam1.mount.mb") <= 6.0,
        ),
        Row(
            "samtools view -c, 10 x 1 kb regions, cold, 40 ms",
            SCATTERED_GROUP,
            "bam10.mount",
            "s",
            ".2f",
            "samtools over HTTP",
            "bam10.http",
            "<= 0.5x",
            at_most_half,
        ),
    ]


def count_rows(f: Figures) -> list[list[str]]:
    """Both sides of both groups, for the table of requests to the emulator."""
    out = []
    for key, what in (("bam1", "100 kb region"), ("bam10", "10 x 1 kb regions")):
        for side, name in (("mount", "mount"), ("http", "samtools over HTTP")):
            out.append(count_row(f, f"{key}.{side}", f"{what}, {name}"))
    return out


COUNTS_NOTE = (
    "storage MB: the emulator's sb.storage byte counter. On the HTTP side it is far more "
    "than samtools used: htslib opens with an unranged GET and seeks with open-ended "
    "ranges (bytes=N-), dropping each response once it has what it needs, and the emulator "
    "streams and counts every body to its end after the client has gone. 'MB read by "
    "samtools' is what samtools read from its sockets (one untimed run under strace -y). "
    "The mount sends only bounded ranges, so its counter is exact."
)


def notes(f: Figures, n: RowNumbers) -> list[str]:
    region, scattered = n["bam1.mount"], n["bam10.mount"]
    return [
        f"- rows {region}-{scattered}: timed from a cold mount, so the mount's listing of bam/ "
        f"and its download_info calls are included ({f.median_cell('bam1.mount.api')} API "
        f"requests, each {LATENCY_MS:.0f} ms; the mount lists / as it starts, at 0 ms); "
        "samtools over HTTP gets its two signed URLs untimed (URL##idx##URL). One samtools "
        f"invocation with all regions on both sides. Row {region}: {REGION}, "
        f"{f.notes.get('bam1.reads', '?')}; row {scattered}: {', '.join(SCATTERED)}, "
        f"{f.notes.get('bam10.reads', '?')}."
    ]
