"""Workload groups ``ledger``, ``ledger-tls``, ``ledger-idle``: the round-trip ledger.

The other latency rows delay each response at the emulator (``latency_ms``), so a TCP connect
or a TLS handshake costs nothing there. Here the mount reaches the emulator through two
latency fronts (``bench.front``) at RTT 40 ms: one for the API (``--api-url``) and one for
storage (the emulator's ``storage_url`` knob names it in every signed URL, as S3 is another
host than the API), both forwarding to the same emulator (its own latency 0). Each front
charges RTT/2 per chunk each way, one RTT for a new connection's TCP handshake, and the TLS
handshake's flights when it terminates TLS (a throwaway CA the mount trusts through
``SSL_CERT_FILE``, htslib's libcurl through ``CURL_CA_BUNDLE``).

Workloads, each run on two cold mounts made at RTT 0 (the RTT is set and every counter zeroed
once the mount said ready): **hosts known**, a cache directory an earlier mount used (it read
one byte of a file in ``big/``: the API and storage hosts are remembered, the workload's
folder was never listed and none of its bytes is cached; what a user's cold query is on a
machine that mounted before; acceptance is judged here), and **first ever**, a fresh cache
directory (the storage host is learned from the first signed URL, so its connections are
set up on the critical path):

- ``bam1``: ``samtools view -c`` of the 100 kb region of ``bench.bam``'s BAM;
- ``bam10``: ``samtools view -c`` of its 10 scattered 1 kb regions, in one invocation;
- ``vcf``: ``tabix`` of a 100 kb region of ``bench.vcf``'s VCF (59 MB, bgzipped, indexed),
  counted as lines;

in three variants: ``plain`` (HTTP on both fronts; group ``ledger``), ``tls1.3`` and
``tls1.2`` (TLS pinned to that version on both fronts; group ``ledger-tls``); and beside each,
the reference: the same tool reading over HTTP(S) directly through the storage front, handed
its two signed URLs untimed (``URL##idx##URL``). Every count must equal the same query on the
local file.

The critical-path figure: round trips = elapsed seconds ÷ RTT (one decimal), the tool's whole
run, its CPU and the mount's included, so it is an upper bound on the round trips in series.
The floor is the fewest round trips a client could spend with warm connections: ``bam1`` and
``vcf``, 4 (list the folder; resolve both signed URLs in parallel; fetch the file's head, its
index and its tail together; fetch the region); ``bam10``, 3 + 10 (samtools asks for the
regions one after another). A new connection costs 1 RT more, its TLS handshake 1 (TLS 1.3
or resumed 1.2) or 2 (full TLS 1.2).

``ledger-idle``: a mount through the fronts at 40 ms (plain, then TLS 1.2, whose re-opened
connections show the resumption), one ``ls`` of its root, then
``REMOTEFS_BENCH_IDLE_SECONDS`` (default 60) of idling, timed on purpose: the API and storage
requests in that time must be 0 (no request made only to keep a connection warm); the
connections the mount opened are reported (a warm pool re-opening after a server's idle
close is allowed; the emulator closes idle connections after 30 s).

Columns: connects, accepted by the API front / the storage front; TLS handshakes, full /
resumed, both fronts; API and storage requests, the emulator's counters.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench import bam, vcf
from bench.common import BIG_PATH, HOST, BenchError
from bench.front import Front, FrontCounts, ThrowawayCA, running_front
from bench.harness import (
    TOOL_TIMEOUT,
    Figures,
    MountBench,
    Platform,
    both_orders,
    child_env,
    run_tool,
)

LEDGER_GROUP = "ledger"
TLS_GROUP = "ledger-tls"
IDLE_GROUP = "ledger-idle"
GROUP_NAMES = (LEDGER_GROUP, TLS_GROUP, IDLE_GROUP)

RTT_MS = 40.0
IDLE_ENV = "REMOTEFS_BENCH_IDLE_SECONDS"
IDLE_SECONDS = 60.0


def idle_seconds() -> float:
    text = os.environ.get(IDLE_ENV, "")
    try:
        value = float(text) if text else IDLE_SECONDS
    except ValueError:
        raise BenchError(f"{IDLE_ENV}={text!r}: not a number of seconds") from None
    if not value > 0:
        raise BenchError(f"{IDLE_ENV}={text!r}: must be > 0")
    return value


@dataclass(frozen=True)
class Workload:
    key: str
    name: str
    floor: int
    target: str
    tool: str
    """``samtools`` or ``tabix``."""
    path: str
    """Of the data file in the project; the index is ``path`` + ``index_suffix``."""
    index_suffix: str
    regions: tuple[str, ...]
    judge: Callable[[Figures, str], bool | None]
    """PASS/FAIL from the figures under ``ledger.KEY.VARIANT``; None: not judged."""

    def argv(self, target: str) -> list[str]:
        if self.tool == "samtools":
            return ["samtools", "view", "-c", target, *self.regions]
        return ["tabix", target, *self.regions]

    def count(self, out: bytes) -> int:
        if self.tool == "samtools":
            return int(out.decode().split()[0])
        return out.count(b"\n")


def network_round_trips(f: Figures, prefix: str) -> float | None:
    """Round trips waited for on the network: (the median at RTT 40 ms - the median of the
    same cold run at RTT 0) / RTT. What is left of the elapsed time is CPU (the tool's, the
    mount's, the kernel's, the fronts' and the emulator's), which the RTT-0 run also spends."""
    s, zero = f.get(f"{prefix}.mount"), f.get(f"{prefix}.zero")
    if s is None or zero is None:
        return None
    return (s.median - zero.median) / (RTT_MS / 1000)


def _within(rt: float, seconds: float) -> Callable[[Figures, str], bool | None]:
    def judge(f: Figures, prefix: str) -> bool | None:
        s, net = f.get(f"{prefix}.mount"), network_round_trips(f, prefix)
        if s is None or net is None:
            return None
        return net <= rt and s.median <= seconds

    return judge


def _ratio_at_most(ratio: float) -> Callable[[Figures, str], bool | None]:
    def judge(f: Figures, prefix: str) -> bool | None:
        mine, ref = f.get(f"{prefix}.mount"), f.get(f"{prefix}.http")
        if mine is None or ref is None or ref.median == 0:
            return None
        return mine.median / ref.median <= ratio

    return judge


def _seconds_at_most(seconds: float) -> Callable[[Figures, str], bool | None]:
    def judge(f: Figures, prefix: str) -> bool | None:
        s = f.get(f"{prefix}.mount")
        return None if s is None else s.median <= seconds

    return judge


WORKLOADS = (
    Workload(
        "bam1",
        "BAM 100 kb region",
        4,
        "<= 5 RT; <= 0.22 s",
        "samtools",
        f"{bam.BAM_DIR}/{bam.BAM_NAME}",
        ".bai",
        (bam.REGION,),
        _within(5, 0.22),
    ),
    Workload(
        "bam10",
        "BAM 10 x 1 kb regions",
        3 + len(bam.SCATTERED),
        "<= 0.45x HTTP",
        "samtools",
        f"{bam.BAM_DIR}/{bam.BAM_NAME}",
        ".bai",
        bam.SCATTERED,
        _ratio_at_most(0.45),
    ),
    Workload(
        "vcf",
        "VCF 100 kb region (tabix)",
        4,
        "<= 0.22 s",
        "tabix",
        f"{vcf.VCF_DIR}/{vcf.VCF_NAME}",
        ".tbi",
        (vcf.REGION,),
        _seconds_at_most(0.22),
    ),
)

VARIANTS: dict[str, tuple[str, ...]] = {
    LEDGER_GROUP: ("plain",),
    TLS_GROUP: ("tls1.3", "tls1.2"),
}
TLS_VERSION = {"plain": None, "tls1.3": "1.3", "tls1.2": "1.2"}


# --- the fronts -----------------------------------------------------------------------------


@dataclass
class Fronts:
    """The API front and the storage front of one variant, the mount's view of the emulator
    through them, and the environment that makes a client trust their CA."""

    api: Front
    storage: Front
    platform: Platform
    env: dict[str, str]

    def start_clock(self, rtt_ms: float) -> None:
        """Set the RTT on both and zero their counters (the emulator's: by the caller)."""
        for front in (self.api, self.storage):
            front.rtt = rtt_ms / 1000
            front.reset()

    def stop_clock(self) -> None:
        self.api.rtt = self.storage.rtt = 0.0


@contextmanager
def fronted(bench: MountBench, ca: ThrowawayCA | None, variant: str) -> Iterator[Fronts]:
    """Both fronts of ``variant``, at RTT 0, the emulator's signed URLs naming the storage
    front's origin until the way out."""
    emu = bench.emu
    upstream = (HOST, _port(emu.emulator.url))
    version = TLS_VERSION[variant]
    if version and ca is None:
        raise BenchError(f"{variant} needs a CA")
    # One context per front: like two hosts, they do not share session-ticket keys.
    api_tls = ca.server_context(version) if ca and version else None
    storage_tls = ca.server_context(version) if ca and version else None
    env = {"SSL_CERT_FILE": str(ca.pem), "CURL_CA_BUNDLE": str(ca.pem)} if ca and version else {}
    with ExitStack() as stack:
        api = stack.enter_context(running_front(upstream, api_tls))
        storage = stack.enter_context(running_front(upstream, storage_tls))
        emu.emulator.configure(storage_url=storage.url)
        try:
            yield Fronts(api, storage, Platform(emu.emulator, emu.project, api.url), env)
        finally:
            emu.emulator.configure(storage_url="")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def record_counts(
    f: Figures, key: str, api: FrontCounts, storage: FrontCounts, emu: Platform
) -> None:
    """``KEY.connects.*``, ``KEY.tls.*`` from both fronts, ``KEY.api``/``KEY.storage`` from
    the emulator's counters."""
    counts = emu.counts()
    f.add(f"{key}.connects.api", api.connections)
    f.add(f"{key}.connects.storage", storage.connections)
    resumed = api.tls_resumed + storage.tls_resumed
    f.add(f"{key}.tls.full", api.tls_handshakes + storage.tls_handshakes - resumed)
    f.add(f"{key}.tls.resumed", resumed)
    f.add(f"{key}.api", counts.api_requests)
    f.add(f"{key}.storage", counts.storage_requests)


# --- one run of a group ---------------------------------------------------------------------


class Ledger:
    """One group: its variants, each workload on a cold mount and over HTTP, per run."""

    def __init__(self, bench: MountBench, variants: tuple[str, ...]) -> None:
        self.bench = bench
        self.variants = variants
        self.ca = ThrowawayCA(bench.work)
        self.items = {
            w.key: (bench.emu.find(w.path), bench.emu.find(w.path + w.index_suffix))
            for w in WORKLOADS
        }
        self.expected = {w.key: self._local_count(w) for w in WORKLOADS}

    def _local_count(self, w: Workload) -> int:
        local = self.bench.data / w.path
        scratch = Path(tempfile.mkdtemp(dir=self.bench.work))
        try:
            _, out, _ = run_tool(w.argv(str(local.resolve())), TOOL_TIMEOUT, cwd=scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        count = w.count(out)
        if count == 0:
            raise BenchError(f"{w.name}: the local file has nothing in {' '.join(w.regions)}")
        return count

    def __call__(self, run: int) -> None:
        for variant in self.variants:
            with fronted(self.bench, self.ca, variant) as fronts:
                for w in WORKLOADS:
                    both_orders(
                        run,
                        partial(self.on_mount, w, variant, fronts),
                        partial(self.over_http, w, variant, fronts),
                    )

    def _check(self, w: Workload, side: str, count: int) -> None:
        if count != self.expected[w.key]:
            raise BenchError(
                f"{w.name} {side}: counted {count}, the local file {self.expected[w.key]}"
            )

    def _record(self, key: str, seconds: float, fronts: Fronts) -> None:
        f = self.bench.figures
        f.add(key, seconds)
        f.add(f"{key}.rt", seconds / (RTT_MS / 1000))
        record_counts(f, key, fronts.api.counts(), fronts.storage.counts(), self.bench.emu)

    def on_mount(self, w: Workload, variant: str, fronts: Fronts) -> None:
        """Both cold cases: a mount whose cache directory knows the hosts (an earlier mount of
        it read a byte of a file in another folder: it lists neither the workload's folder
        nor holds any of its bytes), and a first mount ever (a fresh cache directory)."""
        for side, known, rtt in (
            ("mount", True, RTT_MS),
            ("first", False, RTT_MS),
            ("zero", True, 0.0),
        ):
            self._cold(w, variant, fronts, side, known, rtt)

    def _cold(
        self, w: Workload, variant: str, fronts: Fronts, side: str, known: bool, rtt: float
    ) -> None:
        bench = self.bench
        env = child_env(**fronts.env)
        cache, log = bench.fresh(f"ledger-{w.key}-{variant}-{side}")
        try:
            if known:
                with (
                    bench.mount(cache, log, 0.0, emu=fronts.platform, env=env),
                    (bench.mnt / BIG_PATH).open("rb") as f,
                ):
                    f.read(1)
                log = log.with_name(log.stem + "-timed.log")
            with bench.mount(cache, log, 0.0, emu=fronts.platform, env=env):
                scratch = Path(tempfile.mkdtemp(dir=bench.work))
                fronts.start_clock(rtt)
                bench.emu.reset()
                try:
                    seconds, out, _ = run_tool(
                        w.argv(str(bench.mnt / w.path)), TOOL_TIMEOUT, cwd=scratch, env=env
                    )
                    self._record(f"ledger.{w.key}.{variant}.{side}", seconds, fronts)
                finally:
                    fronts.stop_clock()
                    shutil.rmtree(scratch, ignore_errors=True)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        self._check(w, "through the mount", w.count(out))

    def over_http(self, w: Workload, variant: str, fronts: Fronts) -> None:
        bench = self.bench
        data, index = self.items[w.key]
        # The emulator's signed URLs name the storage front (its storage_url knob).
        target = f"{bench.emu.signed_url(data['id'])}##idx##{bench.emu.signed_url(index['id'])}"
        env = child_env(**fronts.env)
        scratch = Path(tempfile.mkdtemp(dir=bench.work))  # htslib may keep the index here
        fronts.start_clock(RTT_MS)
        bench.emu.reset()
        try:
            seconds, out, _ = run_tool(w.argv(target), TOOL_TIMEOUT, cwd=scratch, env=env)
            self._record(f"ledger.{w.key}.{variant}.http", seconds, fronts)
        finally:
            fronts.stop_clock()
            shutil.rmtree(scratch, ignore_errors=True)
        self._check(w, "over HTTP", w.count(out))


IDLE_VARIANTS = ("plain", "tls1.2")
"""Plain, and TLS 1.2, whose re-opened connections show the resumption (a full TLS 1.2
handshake costs 2 RT, a resumed one 1)."""


class Idle:
    """One run of ``ledger-idle``: a mount through the fronts, one ``ls``, then idling; plain
    and over TLS 1.2."""

    def __init__(self, bench: MountBench) -> None:
        self.bench = bench
        self.seconds = idle_seconds()
        self.ca = ThrowawayCA(bench.work)

    def __call__(self, run: int) -> None:
        for variant in IDLE_VARIANTS:
            self.idle(variant)

    def idle(self, variant: str) -> None:
        bench, f = self.bench, self.bench.figures
        with fronted(bench, self.ca, variant) as fronts:
            env = child_env(**fronts.env)
            with bench.cold_mount(f"ledger-idle-{variant}", 0.0, emu=fronts.platform, env=env):
                fronts.start_clock(RTT_MS)
                try:
                    run_tool(["ls", str(bench.mnt)], TOOL_TIMEOUT)
                    bench.emu.settle()
                    fronts.start_clock(RTT_MS)  # zero the counters after the ls
                    bench.emu.reset()
                    time.sleep(self.seconds)  # the idle period is what is measured
                    key = f"ledger.idle.{variant}"
                    record_counts(f, key, fronts.api.counts(), fronts.storage.counts(), bench.emu)
                finally:
                    fronts.stop_clock()
        f.add(f"{key}.seconds", self.seconds)


GROUPS: dict[str, Callable[[MountBench], Callable[[int], None]]] = {
    LEDGER_GROUP: lambda bench: Ledger(bench, VARIANTS[LEDGER_GROUP]),
    TLS_GROUP: lambda bench: Ledger(bench, VARIANTS[TLS_GROUP]),
    IDLE_GROUP: Idle,
}
"""The three groups: what ``--only`` names, and how each is set up for a session."""
