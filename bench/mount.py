"""``scripts/bench mount [--runs N] [--quick] [--only GROUP]``: real tools through a real mount.

It runs real tools through a real Seven Bridges mount (``remotefs mount --foreground``,
readiness on ``REMOTEFS_READY_FD``) of an emulated project, each workload beside a reference
measured in the same run, and prints one table (medians of N >= 3 runs, min-max, ratio,
target, PASS/FAIL) and the emulator's request counts. The data: the generated 1 GiB file
(256 MiB with ``--quick``), a folder of 2,000 tiny files, a coordinate-sorted indexed BAM of
>= 300 MB (generated once, deterministically, under ``$XDG_CACHE_HOME/remotefs/bench``), the
demo's .h5ad, (for the ledger groups) a tabix-indexed VCF of 59 MB, and (not with
``--quick``) a folder of 100,000 empty files. Workloads, each on a fresh mount with a fresh
cache directory ("cold"; remounting also drops the mount's page cache, the host's caches are
never dropped), in groups that ``--only`` names:

- ``sequential`` (``bench/sequential.py``): ``dd bs=1M`` of the big file, cold, at 40 ms,
  warm and after a remount, and the mount's peak RSS;
- ``bam-region``, ``bam-scattered`` (``bench/bam.py``): ``samtools view -c`` of regions at
  40 ms vs samtools over HTTP;
- ``ls``, ``huge-listing`` (``bench/listing.py``): ``ls -l`` of 2,000 entries at 40 ms vs the
  pages over HTTP; RSS per entry after one ``ls -f`` of 100,000 entries;
- ``h5py`` (``bench/hdf5.py``): one dataset of the .h5ad at 40 ms vs a local copy;
- ``control`` (``bench/control.py``): ``remotefs warm`` of the big file vs a cold ``dd`` of
  it, and the status answer time while ``dd`` streams;
- ``ledger``, ``ledger-tls``, ``ledger-idle`` (``bench/ledger.py``, table by
  ``bench/ledger_report.py``): the round-trip ledger. The BAM region queries and a tabix
  region query on a 59 MB VCF (``bench/vcf.py``), through an API front and a storage front
  at RTT 40 ms (``bench/front.py``: connects and TLS handshakes cost their round trips),
  plain, TLS 1.3 and TLS 1.2, each beside the tool over HTTP(S) directly: seconds, round
  trips on the critical path (elapsed / RTT) beside the floor, connects, handshakes, API and
  storage requests; and an idle minute (``REMOTEFS_BENCH_IDLE_SECONDS``) that must make no
  request. Printed as a table of its own after the notes.

The emulator runs with ``--rate-limit`` high enough that no SB rate-limit window is waited
for; latency is set with ``POST /_emulator/config`` after each mount said ready (the ledger
groups: the fronts' RTT instead, the emulator's latency stays 0).

A workload that fails in one run is reported and tried again in the next: the mount's code may
be changing while this runs. Exit status 1 if any run of any group failed.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from bench import bam, control, hdf5, ledger, ledger_report, listing, sequential, vcf
from bench.common import (
    BIG_PATH,
    DEFAULT_SIZE,
    BenchError,
    print_rows,
    running_emulator,
    spot_check,
    write_big_copy,
    write_big_stub,
)
from bench.harness import (
    Figures,
    MountBench,
    Platform,
    Row,
    lazy_unmount_if_mounted,
    run_tool,
)

MOUNT_PROJECT = "bench-user/bench"
QUICK_SIZE = 256 << 20
MOUNT_RUNS = 3
RATE_LIMIT = 100_000_000
"""The emulator's SB budget per window: a benchmark must not wait for the 1000/300 s window."""

GROUPS: dict[str, Callable[[MountBench], Callable[[int], None]]] = {
    sequential.GROUP: sequential.Sequential,
    **bam.GROUPS,
    listing.LS_GROUP: listing.Listing,
    hdf5.GROUP: hdf5.Hdf5,
    control.GROUP: control.Control,
    **ledger.GROUPS,
}
"""The groups on the main emulator, and how each is set up for a session (once)."""
GROUP_NAMES = (*GROUPS, listing.HUGE_GROUP)
"""What ``--only`` names, in the order they run; ``huge-listing`` is not run with --quick."""


def table(size: int, list_count: int) -> list[Row]:
    return [
        *sequential.rows(size),
        *bam.rows(),
        listing.ls_row(),
        hdf5.row(),
        sequential.rss_row(size),
        listing.huge_row(list_count),
        *control.rows(size),
    ]


def print_report(f: Figures, rows: list[Row], runs: int, quick: bool) -> None:
    print_rows(
        ["#", "workload", "mount", "reference (same run)", "reference", "ratio", "target", ""],
        [[str(i + 1), *row.cells(f)] for i, row in enumerate(rows)],
        right={0, 2, 4, 5},
    )
    print()
    print("Requests to the emulator, median (min-max) per run; storage = signed-URL GETs:")
    print_rows(
        ["workload", "storage requests", "storage MB", "MB read by samtools", "API requests"],
        [*bam.count_rows(f), *hdf5.count_rows(f)],
        right={1, 2, 3, 4},
    )
    print(bam.COUNTS_NOTE)
    print()
    print("Notes:")
    print(
        f"- MB = 10^6 bytes, KB = 10^3 bytes; medians of {runs} runs, each cold figure on a fresh "
        "mount with a fresh cache directory (the mount's page cache dies with it)."
    )
    numbers = {row.mount_key: i + 1 for i, row in enumerate(rows)}
    for line in (
        *sequential.notes(f, numbers),
        *bam.notes(f, numbers),
        *listing.ls_notes(f, numbers),
        *hdf5.notes(f, numbers),
        *listing.huge_notes(f, numbers, quick),
    ):
        print(line)
    print(
        f"- the emulator runs with --rate-limit {RATE_LIMIT:,} (no SB rate-limit waits); "
        "latency is set with POST /_emulator/config after each mount said ready."
    )
    if ledger_report.ran(f):
        print()
        ledger_report.print_table(f, runs)
    if f.errors:
        print("- *: some runs of that workload failed; its figures are those of the other runs.")
    for group, errors in f.errors.items():
        for error in errors:
            print(f"- ERROR in {group}, {error[:600]}")


def write_data(work: Path, size: int, *, bam_file: Path, h5ad: Path, vcf_file: Path | None) -> Path:
    """The main emulator's tree: every group's data, whichever groups run (the VCF only for
    the ledger groups)."""
    data = work / "data"
    write_big_stub(data, size)
    listing.write_data(data)
    bam.write_data(data, bam_file)
    hdf5.write_data(data, h5ad)
    if vcf_file is not None:
        vcf.write_data(data, vcf_file)
    return data


def main(runs: int, quick: bool, only: list[str] | None) -> int:
    size = QUICK_SIZE if quick else DEFAULT_SIZE
    names = [
        name
        for name in GROUP_NAMES
        if (only is None or name in only) and not (quick and name == listing.HUGE_GROUP)
    ]
    tools = ["fusermount3", "samtools", "dd", "ls"]
    tools += ["tabix", "bgzip"] if set(names) & set(ledger.GROUP_NAMES) else []
    for tool in tools:
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed")
    if not os.path.exists("/dev/fuse"):
        raise BenchError("no /dev/fuse: cannot mount")
    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    bam_file = bam.ensure_bam()
    h5ad = hdf5.demo_h5ad()
    vcf_file = vcf.ensure_vcf() if set(names) & set(ledger.GROUP_NAMES) else None
    work = Path(tempfile.mkdtemp(prefix="remotefs-bench-"))
    shm = Path(tempfile.mkdtemp(prefix="remotefs-bench-", dir="/dev/shm"))
    bench: MountBench | None = None
    huge_group: listing.HugeListing | None = None
    try:
        data = write_data(work, size, bam_file=bam_file, h5ad=h5ad, vcf_file=vcf_file)
        huge_data = listing.write_huge_data(work) if listing.HUGE_GROUP in names else None
        shm_copy = shm / "local.bin"
        write_big_copy(shm_copy, size, headroom=256 << 20)
        print(f"bench: data ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        with ExitStack() as stack:
            extra = ("--project", MOUNT_PROJECT, "--rate-limit", str(RATE_LIMIT))
            emu = Platform(stack.enter_context(running_emulator(data, work, extra)), MOUNT_PROJECT)
            bench = MountBench(emu, work, data, size, shm_copy)
            spot_check(emu.signed_url(emu.find_big(size)["id"]), {}, shm_copy, size)
            groups = [(name, GROUPS[name](bench)) for name in names if name in GROUPS]
            if huge_data is not None:
                extra = ("--project", listing.HUGE_PROJECT, "--rate-limit", str(RATE_LIMIT))
                started = stack.enter_context(running_emulator(huge_data, work, extra, "huge"))
                huge_group = listing.HugeListing(bench, Platform(started, listing.HUGE_PROJECT))
                groups.append((listing.HUGE_GROUP, huge_group))
            for run in range(runs):
                for name, fn in groups:
                    bench.group(name, fn, run)
    finally:
        lazy_unmount_if_mounted(work / "mnt")
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)

    assert bench is not None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    samtools = run_tool(["samtools", "--version"], 10)[1].decode(errors="replace").split("\n")[0]
    print(
        f"mount benchmark: {size:,}-byte {BIG_PATH}, {bam_file.stat().st_size:,}-byte BAM, "
        f"{runs} runs{' (--quick)' if quick else ''}, {cores} cores, {samtools}, "
        f"kernel {os.uname().release}, loopback, {time.monotonic() - t0:.0f} s in all; "
        f"1-min load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    print()
    list_count = huge_group.list_count if huge_group is not None else 0
    print_report(bench.figures, table(size, list_count), runs, quick)
    return 1 if bench.figures.errors else 0
