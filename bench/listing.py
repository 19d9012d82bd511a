"""Workload groups ``ls`` and ``huge-listing``: listing folders through the mount.

``ls``: ``ls -l`` of a folder of 2,000 tiny files through a cold mount at 40 ms per request,
vs its 20 pages (100 entries each) fetched in series with httpx at the same latency. Also
recorded: the same pages at 0 ms (the emulator is single-threaded: a floor for any client),
the mount's API requests, and a second ``ls -l`` on the same mount (listing and attributes
cached: what is left is the mount's per-entry cost).

``huge-listing`` (not with ``--quick``): the mount's RSS per entry after one ``ls -f`` of a
folder of 100,000 empty files, no latency: (VmRSS after - VmRSS before) / entries. The folder
is served by an emulator of its own (100,000 more objects in the main emulator's heap make its
garbage collector slow every other listing down). When that emulator would take longer than
``LIST_BUDGET`` to serve the whole folder, a 10,000-entry folder is listed instead, and the
report says so.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx

from bench.common import API_TIMEOUT, SB_HEADERS, BenchError, get_json
from bench.harness import (
    LATENCY_MS,
    TOOL_TIMEOUT,
    Figures,
    MountBench,
    Platform,
    Row,
    RowNumbers,
    both_orders,
    proc_status,
    run_tool,
)

LS_GROUP = "ls"
HUGE_GROUP = "huge-listing"

MANY_DIR = "many2000"
MANY_COUNT = 2000
HUGE_PROJECT = "bench-user/huge"
HUGE_DIR = "many100k"
HUGE_COUNT = 100_000
FALLBACK_DIR = "many10k"
FALLBACK_COUNT = 10_000
LIST_BUDGET = 150.0
"""Seconds a listing of the 100,000-entry folder may be projected to take (pages x the time
the emulator takes for one page) before the 10,000-entry folder is listed instead."""


def write_data(data: Path) -> None:
    """``data/many2000/``: 2,000 tiny files, in the main emulator's project."""
    many = data / MANY_DIR
    many.mkdir()
    for i in range(MANY_COUNT):
        (many / f"tiny-{i:04d}.txt").write_text(f"tiny file {i}\n")


def _empty_files(folder: Path, count: int) -> None:
    folder.mkdir()
    width = len(str(count - 1))
    for i in range(count):
        os.close(os.open(folder / f"e{i:0{width}d}", os.O_CREAT | os.O_WRONLY, 0o644))


def write_huge_data(work: Path) -> Path:
    """The huge emulator's tree: the 100,000- and the 10,000-entry folders."""
    data = work / "data-huge"
    data.mkdir()
    _empty_files(data / HUGE_DIR, HUGE_COUNT)
    _empty_files(data / FALLBACK_DIR, FALLBACK_COUNT)
    return data


def pages_seconds(pages: list[str], expect: int) -> float:
    """Fetch the listing pages one after another with httpx; the wall time."""
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


class Listing:
    """One run of ``ls``: ``ls -l`` on a cold mount and the pages over HTTP, in either order."""

    def __init__(self, bench: MountBench) -> None:
        self.bench = bench
        self.many = bench.emu.find(MANY_DIR)

    def __call__(self, run: int) -> None:
        pages = [self.bench.emu.page_url(self.many["id"], o) for o in range(0, MANY_COUNT, 100)]
        both_orders(run, self.on_mount, lambda: self.reference(pages))

    def on_mount(self) -> None:
        bench, f = self.bench, self.bench.figures
        with bench.cold_mount("ls", LATENCY_MS):
            argv = ["ls", "-l", str(bench.mnt / MANY_DIR)]
            seconds, out, _ = run_tool(argv, TOOL_TIMEOUT)
            counts = bench.emu.counts()
            # Again on the same mount: listing and attributes cached, so what is left is
            # the mount's per-entry cost (lstat, 2 getxattr per entry; readdir).
            f.add("ls.warm", run_tool(argv, TOOL_TIMEOUT)[0])
        lines = out.count(b"\n")
        if lines != MANY_COUNT + 1:  # "total N" and one line per entry
            raise BenchError(f"ls -l printed {lines} lines, expected {MANY_COUNT + 1}")
        f.add("ls.mount", seconds)
        f.add("ls.mount.api", counts.api_requests)

    def reference(self, pages: list[str]) -> None:
        emu, f = self.bench.emu, self.bench.figures
        f.add("ls.http0", pages_seconds(pages, MANY_COUNT))
        emu.latency(LATENCY_MS)
        try:
            f.add("ls.http", pages_seconds(pages, MANY_COUNT))
        finally:
            emu.latency(0)


class HugeListing:
    """One run of ``huge-listing`` against ``huge``, the emulator of the big folders; which
    folder is listed is chosen once, when the group is set up."""

    def __init__(self, bench: MountBench, huge: Platform) -> None:
        self.bench = bench
        self.huge = huge
        self.list_dir, self.list_count = self._choose()

    def _choose(self) -> tuple[str, int]:
        """The 100,000-entry folder, unless the emulator would take too long to list it."""
        folder = self.huge.find(HUGE_DIR)
        t0 = time.monotonic()
        get_json(self.huge.page_url(folder["id"], HUGE_COUNT // 2), SB_HEADERS)
        page = time.monotonic() - t0
        projected = page * (HUGE_COUNT // 100)
        if projected <= LIST_BUDGET:
            return HUGE_DIR, HUGE_COUNT
        fallback = (
            f"the emulator takes {page:.2f} s per page of the {HUGE_COUNT:,}-entry folder, so "
            f"one listing would take ~{projected / 60:.0f} min: listed the {FALLBACK_COUNT:,}-"
            "entry folder instead"
        )
        self.bench.figures.notes["list.fallback"] = fallback
        print(f"bench: {fallback}", file=sys.stderr)
        return FALLBACK_DIR, FALLBACK_COUNT

    def __call__(self, run: int) -> None:
        bench, f = self.bench, self.bench.figures
        timeout = max(TOOL_TIMEOUT, 600.0)
        # A long operation deadline: this workload measures memory, not time.
        with bench.cold_mount("list", 0, ("--timeout", f"{timeout:.0f}"), self.huge) as m:
            run_tool(["ls", str(bench.mnt)], TOOL_TIMEOUT)
            time.sleep(0.5)
            before = proc_status(m.pid)["VmRSS"]
            seconds, out, _ = run_tool(["ls", "-f", str(bench.mnt / self.list_dir)], timeout + 30)
            time.sleep(1.0)
            status = proc_status(m.pid)
        entries = sum(1 for name in out.split(b"\n") if name not in (b"", b".", b".."))
        if entries != self.list_count:
            raise BenchError(f"ls -f listed {entries:,} entries, expected {self.list_count:,}")
        f.add("list.per_entry", (status["VmRSS"] - before) / entries / 1e3)
        f.add("list.seconds", seconds)
        f.add("list.before", before / 1e6)
        f.add("list.hwm", status["VmHWM"] / 1e6)


# --- the report -----------------------------------------------------------------------------


def ls_row() -> Row:
    return Row(
        f"ls -l of {MANY_COUNT:,} entries, cold, 40 ms",
        LS_GROUP,
        "ls.mount",
        "s",
        ".2f",
        "20 pages in series, httpx",
        "ls.http",
        "< 0.5 s",
        lambda row, f: f.median("ls.mount") < 0.5,
    )


def huge_row(list_count: int) -> Row:
    """``list_count``: the entries of the folder listed; 0 if the group did not run."""
    return Row(
        f"RSS per entry, {list_count:,}-entry folder" if list_count else "RSS per entry",
        HUGE_GROUP,
        "list.per_entry",
        "KB",
        ".2f",
        target="<= 2 KB",
        passes=lambda row, f: f.median("list.per_entry") <= 2.0,
    )


def ls_notes(f: Figures, n: RowNumbers) -> list[str]:
    return [
        f"- row {n['ls.mount']}: the emulator alone serves the 20 pages in series in "
        f"{f.median_cell('ls.http0', '.2f')} s at 0 ms (it is single-threaded: that time is a "
        f"floor for any client); the mount made {f.median_cell('ls.mount.api')} API requests; "
        f"a second `ls -l` on the same mount (listing cached) took "
        f"{f.median_cell('ls.warm', '.2f')} s."
    ]


def huge_notes(f: Figures, n: RowNumbers, quick: bool) -> list[str]:
    row = n["list.per_entry"]
    out = []
    if quick:
        out.append(f"- row {row}: skipped by --quick.")
    elif f.get("list.per_entry") is not None:
        out.append(
            f"- row {row}: (VmRSS after - before) / entries after one `ls -f` of the folder "
            "(served by an emulator of its own), no latency; the listing took "
            f"{f.median_cell('list.seconds', '.1f')} s, VmRSS before "
            f"{f.median_cell('list.before')} MB, VmHWM after {f.median_cell('list.hwm')} MB."
        )
    if "list.fallback" in f.notes:
        out.append(f"- row {row}: {f.notes['list.fallback']}.")
    return out
