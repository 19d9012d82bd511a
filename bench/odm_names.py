"""``scripts/bench odm-names``: an ODM folder of 10,000 files, walked by names and by
attributes through a cold mount at 40 ms per request (issue 19, point 4).

ODM lists no size (A19), so a size costs a ``HEAD``. Measured on fresh mounts of one
emulator serving ``all/`` with ``--files`` tiny files (default 10,000), each run:

- ``ls`` and ``find all -name '*.bam'``: the requests they cost, by route (the target: the
  listing's pages only, no HEAD);
- ``ls -l``: its wall time and requests, its sizes checked against the local files, beside
  the time its HEADs need at the transport's connection limit: ``files / 32 x 40 ms``, and
  the same HEADs measured in this run, 32 at once over kept-alive connections (the
  reference). Target: ``ls -l`` <= 1.3x the computed bound.
"""

from __future__ import annotations

import http.client
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from bench.common import ODM_HEADERS, TOKEN, BenchError, print_rows, running_emulator
from bench.harness import LATENCY_MS, _unmount, child_env
from tests.support.fuse import MountFailed, start_mount

FILES = 10_000
RUNS = 3
CONNECTIONS = 32
"""The mount's transport connection limit (remotefs.http.client)."""
API = "/api/v1/as-user"


def write_data(data: Path, count: int) -> dict[str, int]:
    sizes = {}
    for i in range(count):
        name = f"sample-{i:05d}.{'bam' if i % 10 == 0 else 'txt'}"
        body = b"x" * (i % 97)
        (data / name).write_bytes(body)
        sizes[name] = len(body)
    return sizes


def heads_seconds(base: str, accessions: list[str]) -> float:
    """Every accession's HEAD, ``CONNECTIONS`` at once, each thread on one kept-alive
    connection: the reference."""
    parts = urlsplit(base)
    chunks = [accessions[i::CONNECTIONS] for i in range(CONNECTIONS)]

    def worker(chunk: list[str]) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        try:
            for accession in chunk:
                conn.request("HEAD", f"{API}/files/{accession}/download", headers=ODM_HEADERS)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise BenchError(f"HEAD {accession}: {response.status}")
        finally:
            conn.close()

    began = time.monotonic()
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        list(pool.map(worker, chunks))
    return time.monotonic() - began


def accessions_of(base: str) -> list[str]:
    import json

    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    found: list[str] = []
    try:
        while True:
            conn.request(
                "GET",
                f"{API}/files?pageOffset={len(found)}&pageLimit=2000",
                headers={**ODM_HEADERS, "Accept": "application/json"},
            )
            body = json.loads(conn.getresponse().read())
            page = [obj["genestack:accession"] for obj in body["data"]]
            found += page
            if not page or len(found) >= body["meta"]["pagination"]["total"]:
                return found
    finally:
        conn.close()


def main(runs: int, files: int) -> int:
    figures: dict[str, list[float]] = {}
    routes: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="remotefs-bench-odm-") as tmp:
        work = Path(tmp)
        data = work / "data"
        data.mkdir()
        sizes = write_data(data, files)
        with running_emulator(data, work) as emu:
            base = emu.url
            accessions = accessions_of(base)
            if len(accessions) != files:
                raise BenchError(f"the emulator lists {len(accessions)} files, not {files}")
            for run in range(runs):
                emu.configure(latency_ms=LATENCY_MS)
                figures.setdefault("heads", []).append(heads_seconds(base, accessions))
                for what in ("ls", "find", "ls -l"):
                    mnt, cache = work / f"m{run}-{what}", work / f"c{run}-{what}"
                    args = ["--platform", "genestack", "--api-url", base]
                    args += ["--cache-dir", str(cache)]
                    emu.configure(latency_ms=0)
                    try:
                        m = start_mount(
                            mnt,
                            args,
                            {"GENESTACK_API_TOKEN": TOKEN},
                            work / f"m{run}.log",
                            base_env=child_env(),
                        )
                    except MountFailed as exc:
                        raise BenchError(f"the mount failed: {exc.reason}") from None
                    try:
                        emu.configure(latency_ms=LATENCY_MS)
                        emu.reset()
                        folder = mnt / "all"
                        argv = {
                            "ls": ["ls", str(folder)],
                            "find": ["find", str(folder), "-name", "*.bam"],
                            "ls -l": ["ls", "-l", str(folder)],
                        }[what]
                        began = time.monotonic()
                        done = subprocess.run(
                            argv, capture_output=True, text=True, timeout=600, env=child_env()
                        )
                        seconds = time.monotonic() - began
                        if done.returncode != 0:
                            raise BenchError(
                                f"{what}: exit {done.returncode}: {done.stderr[-300:]}"
                            )
                        routes[what] = emu.stats()["requests"]
                        figures.setdefault(what, []).append(seconds)
                        if what == "ls -l":
                            check_sizes(done.stdout, sizes)
                    finally:
                        emu.configure(latency_ms=0)
                        _unmount(m)
                print(f"bench: run {run + 1}/{runs} done", file=sys.stderr)
    bound = files / CONNECTIONS * LATENCY_MS / 1000
    rows = []
    for what in ("ls", "find", "ls -l"):
        rows.append(
            [
                what,
                f"{statistics.median(figures[what]):.2f}",
                f"{min(figures[what]):.2f}-{max(figures[what]):.2f}",
                ", ".join(f"{k} {v}" for k, v in sorted(routes[what].items())),
            ]
        )
    heads = statistics.median(figures["heads"])
    rows.append(["HEADs, 32 at once (reference)", f"{heads:.2f}", "", f"odm.head {files}"])
    print(
        f"odm-names: all/ of {files:,} files, cold mounts, {LATENCY_MS:.0f} ms per request; "
        f"medians of {runs} runs; the last run's requests"
    )
    print_rows(["workload", "seconds", "min-max", "requests"], rows, right={1, 2})
    ls_l = statistics.median(figures["ls -l"])
    names_only = all(set(routes[w]) == {"odm.files.list"} for w in ("ls", "find"))
    met = names_only and ls_l <= 1.3 * bound
    print(
        f"target: ls and find send listing requests only: {'yes' if names_only else 'NO'}; "
        f"ls -l {ls_l:.2f} s <= 1.3 x {bound:.2f} s ({files:,} / {CONNECTIONS} x "
        f"{LATENCY_MS:.0f} ms) = {1.3 * bound:.2f} s: {'met' if met else 'NOT met'} "
        f"(measured HEADs: {heads:.2f} s; ls -l / measured {ls_l / heads:.2f}x)"
    )
    return 0 if met else 1


def check_sizes(listing: str, sizes: dict[str, int]) -> None:
    seen = 0
    for line in listing.splitlines()[1:]:
        fields = line.split(maxsplit=8)
        if sizes.get(fields[8]) != int(fields[4]):
            raise BenchError(f"ls -l says {line!r}; the file has {sizes.get(fields[8])} bytes")
        seen += 1
    if seen != len(sizes):
        raise BenchError(f"ls -l listed {seen} files, not {len(sizes)}")
