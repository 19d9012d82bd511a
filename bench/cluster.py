"""``scripts/bench cluster``: N mounts of one token, with and without ``--shared-state``
(issue 18).

For N = 1, 2, 4, 8: N mounts (separate processes and cache directories on this machine) of
one emulator whose SB budget is tight (``--rate-limit 100 --rate-window 30``: 100 requests
per 30 s, for all of them together), each running the cohort workload at the same time
(``tests.support.cohort``: ``ls -lR`` of the project, a samtools region on each of 10 BAMs,
``md5sum`` of 5 small files), once alone and once sharing a ``redis-server`` started for the
run on a free loopback port. Every run starts a fresh emulator (a fresh budget) and fresh
caches; every node's results are checked against the same workload on the local tree.

Per N and mode, the medians over the runs of: API requests (every SB route but storage),
429 answers, and the wall time of the slowest node (from the moment all N start the
workload). Mounts get ``--timeout 120``, so that a node alone waits for the window's reset
rather than failing a read. Targets (issue 18): sharing, 8 nodes spend <= 1.25x one node's
requests with no 429, and the slowest of 8 takes <= 1.5x one node's time.

The largest N also runs once more alone with an unlimited budget (``unlimited``): what N
nodes cost this machine's CPUs with no budget to share (the floor of the slowest node's
time), so that the time a shared budget adds can be told from the time N copies of the
workload cost on a few cores.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import TOKEN, BenchError, print_rows, running_emulator
from bench.harness import _unmount, child_env
from remotefs.config import default_cache_root
from remotefs.emulator.demo import DemoBuildError, build_demo
from tests.support.cohort import CohortResult, run_cohort, write_cohort
from tests.support.fuse import Mount, MountFailed, start_mount
from tests.support.redis import Redis, free_port, redis_unavailable

SIZES = (1, 2, 4, 8)
RUNS = 3
RATE_LIMIT, RATE_WINDOW = 100, 30
PROJECT = "lab/cohort"
MOUNT_TIMEOUT_ARG = ("--timeout", "120")


@dataclass(frozen=True)
class Outcome:
    requests: int
    refusals: int
    slowest: float
    failures: int


def cohort_tree(work: Path) -> Path:
    try:
        bam = build_demo(default_cache_root()) / "bam" / "ex1.bam"
    except DemoBuildError as exc:
        raise BenchError(f"cannot build the demo dataset for its BAM: {exc}") from None
    return write_cohort(work / "cohort", bam)


@contextmanager
def nodes(base: Path, url: str, count: int, shared: str | None) -> Iterator[list[Mount]]:
    """``count`` mounts started together; all unmounted on the way out."""
    extra = [*MOUNT_TIMEOUT_ARG, *(("--shared-state", shared) if shared else ())]

    def one(i: int) -> Mount:
        args = ["--platform", "sevenbridges", "--api-url", f"{url}/v2", "--project", PROJECT]
        args += ["--cache-dir", str(base / f"n{i}-cache"), *extra]
        env = {"SB_AUTH_TOKEN": TOKEN}
        return start_mount(base / f"n{i}", args, env, base / f"n{i}.log", base_env=child_env())

    with ExitStack() as stack, ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(one, i) for i in range(count)]
        failed = None
        for future in futures:
            if (exc := future.exception()) is None:
                stack.callback(_unmount, future.result())
            elif isinstance(exc, MountFailed):
                failed = exc
            else:
                raise exc
        if failed is not None:
            raise BenchError(f"a mount failed: {failed.reason}")
        yield [future.result() for future in futures]


UNLIMITED = 10**9
MODES = {
    "alone": (False, RATE_LIMIT),
    "shared": (True, RATE_LIMIT),
    "unlimited": (False, UNLIMITED),
}


def run_once(
    tree: Path, expected: CohortResult, work: Path, count: int, share: bool, limit: int
) -> Outcome:
    args = ("--project", PROJECT, "--rate-limit", str(limit))
    args += ("--rate-window", str(RATE_WINDOW))
    with ExitStack() as stack:
        emu = stack.enter_context(running_emulator(tree, work, args))
        url = None
        if share:
            redis = Redis(port=free_port(), log=work / "redis.log")
            redis.start()
            stack.callback(redis.stop)
            url = redis.url
        mounts = stack.enter_context(nodes(work, emu.url, count, url))

        def workload(m: Mount) -> tuple[float, bool]:
            began = time.monotonic()
            try:
                ok = run_cohort(m.path) == expected
            except AssertionError as exc:
                print(f"bench: a node's workload failed: {exc}", file=sys.stderr)
                ok = False
            return time.monotonic() - began, ok

        with ThreadPoolExecutor(count) as pool:
            results = list(pool.map(workload, mounts))
        stats = emu.stats()
    requests = sum(
        n for r, n in stats["requests"].items() if r.startswith("sb.") and r != "sb.storage"
    )
    refusals = sum(n for s, n in stats["statuses"].items() if s.endswith(" 429"))
    return Outcome(requests, refusals, max(t for t, _ in results), sum(not ok for _, ok in results))


def main(runs: int, sizes: tuple[int, ...] = SIZES) -> int:
    if reason := redis_unavailable():
        raise BenchError(reason)
    with tempfile.TemporaryDirectory(prefix="remotefs-bench-cluster-") as tmp:
        work = Path(tmp)
        tree = cohort_tree(work)
        expected = run_cohort(tree)
        outcomes: dict[tuple[int, str], list[Outcome]] = {}
        for run in range(runs):
            for count in sizes:
                modes = ["alone", "shared"] + (["unlimited"] if count == max(sizes) else [])
                for mode in modes:
                    where = work / f"run{run}-n{count}-{mode}"
                    where.mkdir()
                    share, limit = MODES[mode]
                    outcome = run_once(tree, expected, where, count, share, limit)
                    outcomes.setdefault((count, mode), []).append(outcome)
                    print(
                        f"bench: run {run + 1}/{runs}, {count} node(s), {mode}: {outcome}",
                        file=sys.stderr,
                    )
    return report(outcomes, sizes)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def report(outcomes: dict[tuple[int, str], list[Outcome]], sizes: tuple[int, ...]) -> int:
    def median(count: int, mode: str, what: str) -> float:
        return statistics.median(getattr(o, what) for o in outcomes[(count, mode)])

    one_requests, one_slowest = (
        median(sizes[0], "alone", "requests"),
        median(sizes[0], "alone", "slowest"),
    )
    rows = []
    for count, mode in outcomes:
        requests, slowest = median(count, mode, "requests"), median(count, mode, "slowest")
        rows.append(
            [
                str(count),
                mode,
                f"{requests:.0f}",
                f"{requests / one_requests:.2f}x",
                f"{median(count, mode, 'refusals'):.0f}",
                f"{slowest:.2f}",
                f"{slowest / one_slowest:.2f}x",
                str(sum(o.failures for o in outcomes[(count, mode)])),
            ]
        )
    runs = len(next(iter(outcomes.values())))
    print(
        f"cluster: the cohort workload on N mounts of one token at once; SB budget {RATE_LIMIT} "
        f"requests per {RATE_WINDOW} s (unlimited: none); medians of {runs} runs; "
        f"ratios against N={sizes[0]} alone"
    )
    header = ["N", "mode", "API requests", "ratio", "429s", "slowest s", "ratio", "failed"]
    print_rows(header, rows, right={0, 2, 3, 4, 5, 6, 7})
    largest = max(sizes)
    if largest == sizes[0]:
        return 0
    requests = median(largest, "shared", "requests") / one_requests
    slowest = median(largest, "shared", "slowest") / one_slowest
    floor = median(largest, "unlimited", "slowest") / one_slowest
    refused = median(largest, "shared", "refusals")
    met = requests <= 1.25 and refused == 0
    print(
        f"target ({largest} nodes sharing): requests {requests:.2f}x <= 1.25x and no 429: "
        f"{'met' if met else 'NOT met'}; slowest node {slowest:.2f}x one node's "
        f"(target <= 1.5x), where {largest} nodes with no budget at all take {floor:.2f}x "
        f"on this machine's {os.cpu_count()} CPUs: sharing adds {slowest / floor:.2f}x"
    )
    return 0 if met else 1
