"""Workload group ``sequential``: streaming the big file through the mount.

The file is the demo's generated ``big/random-1GiB.bin`` (256 MiB with ``--quick``), read
with ``dd bs=1M``:

- cold, on a fresh mount with a fresh cache directory, vs one httpx+trio streaming GET of the
  file's signed URL (``aiter_raw``, the GET alone timed);
- cold with 40 ms added per request, vs the cold read at 0 ms;
- a warm re-read on the same mount, vs ``dd`` of a copy in /dev/shm;
- a re-read after remounting on the same cache directory (the disk cache), vs the cold read;
- the mount's peak RSS during the cold read: VmHWM after it (shown and judged on the worst
  run), and VmRSS sampled every 50 ms during it.

Also recorded: what each read fetched from the emulator, the storage requests of the 40 ms
read, and how much of the file was in the page cache when the warm re-read began (fincore).
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import httpx
import trio

from bench.common import BIG_PATH, MIN_TRANSFER_RATE, BenchError, mbps
from bench.harness import (
    LATENCY_MS,
    RSS_INTERVAL,
    Figures,
    MountBench,
    Row,
    RowNumbers,
    RssSampler,
    both_orders,
    proc_status,
    ratio_at_least,
    run_tool,
)

GROUP = "sequential"


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


class Sequential:
    """One run of the group: the reads on the mount and their references, in either order."""

    def __init__(self, bench: MountBench) -> None:
        self.bench = bench
        self.big = bench.emu.find_big(bench.size)

    def __call__(self, run: int) -> None:
        both_orders(run, self.on_mount, self.references)

    def on_mount(self) -> None:
        bench, emu, f, size = self.bench, self.bench.emu, self.bench.figures, self.bench.size
        mounted_file = bench.mnt / BIG_PATH
        cache, log = bench.fresh("seq")
        with bench.mount(cache, log, 0) as m:
            with RssSampler(m.pid) as rss:
                f.add("seq.cold", dd_mbps(mounted_file, size))
            f.add("seq.rss", rss.peak / 1e6)
            f.add("seq.hwm", proc_status(m.pid).get("VmHWM", 0) / 1e6)
            f.add("seq.cold.mb", emu.counts().storage_mb)
            resident = page_cache_bytes(mounted_file)
            if resident is not None:
                f.add("seq.resident", resident / 1e6)
            emu.reset()
            f.add("seq.warm", dd_mbps(mounted_file, size))
            f.add("seq.warm.mb", emu.counts().storage_mb)
        with bench.mount(cache, log, 0):
            f.add("seq.disk", dd_mbps(mounted_file, size))
            f.add("seq.disk.mb", emu.counts().storage_mb)
        shutil.rmtree(cache, ignore_errors=True)
        with bench.cold_mount("seq40", LATENCY_MS):
            f.add("seq.cold40", dd_mbps(mounted_file, size))
            f.add("seq.cold40.requests", emu.counts().storage_requests)

    def references(self) -> None:
        bench, f = self.bench, self.bench.figures
        url = bench.emu.signed_url(self.big["id"])  # not timed, as the mount's first call
        f.add("seq.http", httpx_stream_mbps(url, bench.size))
        f.add("seq.shm", dd_mbps(bench.shm_copy, bench.size))


def size_label(size: int) -> str:
    return f"{size >> 30} GiB" if size >= 1 << 30 else f"{size >> 20} MiB"


def rows(size: int) -> list[Row]:
    """The four reads, each beside its reference."""
    label = size_label(size)
    return [
        Row(
            f"cold sequential read, {label}, dd bs=1M",
            GROUP,
            "seq.cold",
            "MB/s",
            ",.0f",
            "httpx+trio streaming GET",
            "seq.http",
            ">= 0.9x",
            ratio_at_least(0.9),
        ),
        Row(
            f"cold sequential read, {label}, +40 ms/request",
            GROUP,
            "seq.cold40",
            "MB/s",
            ",.0f",
            "the cold read at 0 ms",
            "seq.cold",
            ">= 0.8x",
            ratio_at_least(0.8),
        ),
        Row(
            "warm re-read, same mount",
            GROUP,
            "seq.warm",
            "MB/s",
            ",.0f",
            "dd of a copy in /dev/shm",
            "seq.shm",
            ">= 0.5x",
            ratio_at_least(0.5),
        ),
        Row(
            "re-read after remount (disk cache)",
            GROUP,
            "seq.disk",
            "MB/s",
            ",.0f",
            "the cold read",
            "seq.cold",
            ">= 1.5x",
            ratio_at_least(1.5),
        ),
    ]


def rss_row(size: int) -> Row:
    """The mount's peak RSS during the cold read, judged on the worst run."""
    return Row(
        f"peak RSS of the mount, cold {size_label(size)} read",
        GROUP,
        "seq.hwm",
        "MB",
        ",.0f",
        target="<= 250 MB",
        passes=lambda row, f: max(f.values["seq.hwm"] + f.values.get("seq.rss", [])) <= 250,
    )


def notes(f: Figures, n: RowNumbers) -> list[str]:
    return [
        f"- rows {n['seq.cold']}-{n['seq.disk']}: the cold read fetched "
        f"{f.median_cell('seq.cold.mb')} MB from the emulator, the warm "
        f"re-read {f.median_cell('seq.warm.mb')} MB, the re-read after remounting "
        f"{f.median_cell('seq.disk.mb')} MB; at 40 ms the cold read took "
        f"{f.median_cell('seq.cold40.requests')} storage requests. The disk-cache re-read reads "
        "cache files the host's page cache still holds (the host's caches are never dropped). "
        f"When the warm re-read began, {f.median_cell('seq.resident')} MB of the file was in the "
        "page cache (fincore); the rest goes through the mount again.",
        f"- row {n['seq.hwm']}: VmHWM after the cold read (shown); the highest VmRSS sampled "
        f"every {RSS_INTERVAL * 1000:.0f} ms during it was {f.median_cell('seq.rss')} MB. Judged "
        "on the worst run.",
    ]
