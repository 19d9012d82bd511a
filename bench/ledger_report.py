"""The round-trip ledger's table and notes (figures from ``bench.ledger``, keys ``ledger.*``).

One line per workload, variant and side (through the mount; the tool over HTTP directly),
then the idle row; a group that did not run has no lines. Seconds are ``median (min-max)``;
every other column is a median over the runs. The mount's line carries the target and
PASS/FAIL; a group that failed in some run marks its verdicts with ``*``, and the errors are
listed by ``bench.mount``'s notes.
"""

from __future__ import annotations

from bench.common import print_rows
from bench.harness import Figures
from bench.ledger import (
    GROUP_NAMES,
    IDLE_GROUP,
    IDLE_VARIANTS,
    LEDGER_GROUP,
    RTT_MS,
    TLS_GROUP,
    TLS_VERSION,
    VARIANTS,
    WORKLOADS,
    network_round_trips,
)

SIDES = (
    ("mount", "mount, hosts known"),
    ("first", "mount, first ever"),
    ("http", "tool over HTTP"),
)
"""``mount``: a cold mount of a cache directory an earlier mount used (no byte of the file,
its folder never listed; the API and storage hosts remembered), what acceptance judges;
``first``: a fresh cache directory, the storage host unknown until the first signed URL."""
HEADER = [
    "workload",
    "variant",
    "side",
    "seconds",
    "RT all/net",
    "floor",
    "connects api/storage",
    "TLS full/resumed",
    "API req",
    "storage req",
    "vs HTTP",
    "target",
    "",
]


def ran(f: Figures) -> bool:
    """Whether any ledger group ran (or failed) in this session."""
    return any(k.startswith("ledger.") for k in f.values) or any(g in f.errors for g in GROUP_NAMES)


def _group_ran(f: Figures, group: str) -> bool:
    prefixes = tuple(f"ledger.{w.key}.{v}." for w in WORKLOADS for v in VARIANTS[group])
    return group in f.errors or any(k.startswith(prefixes) for k in f.values)


def _n(f: Figures, key: str) -> str:
    s = f.get(key)
    return "-" if s is None else f"{s.median:g}"


def _round_trips(f: Figures, prefix: str, key: str, side: str) -> str:
    """Elapsed / RTT; for the hosts-known mount also the network's share (``/net``)."""
    rt = f.median_cell(f"{key}.rt", ".1f")
    net = network_round_trips(f, prefix) if side == "mount" else None
    return rt if net is None else f"{rt}/{net:.1f}"


def _verdict(judged: bool | None, group: str, f: Figures, present: bool) -> str:
    if not present:
        return "ERROR" if group in f.errors else "skipped"
    text = "ERROR" if judged is None else ("PASS" if judged else "FAIL")
    return f"{text} *" if group in f.errors else text


def rows(f: Figures) -> list[list[str]]:
    out = []
    for group in (LEDGER_GROUP, TLS_GROUP):
        if not _group_ran(f, group):
            continue
        for variant in VARIANTS[group]:
            tls = TLS_VERSION[variant] is not None
            for w in WORKLOADS:
                prefix = f"ledger.{w.key}.{variant}"
                for side, side_name in SIDES:
                    key = f"{prefix}.{side}"
                    present = f.get(key) is not None
                    mine, ref = f.get(key), f.get(f"{prefix}.http")
                    ratio = (
                        f"{mine.median / ref.median:.2f}x"
                        if side != "http" and mine and ref and ref.median
                        else "-"
                    )
                    out.append(
                        [
                            w.name,
                            variant,
                            side_name,
                            f.range_cell(key, ".2f"),
                            _round_trips(f, prefix, key, side),
                            str(w.floor),
                            f"{_n(f, f'{key}.connects.api')}/{_n(f, f'{key}.connects.storage')}",
                            f"{_n(f, f'{key}.tls.full')}/{_n(f, f'{key}.tls.resumed')}"
                            if tls
                            else "-",
                            _n(f, f"{key}.api"),
                            _n(f, f"{key}.storage"),
                            ratio,
                            w.target if side == "mount" else "",
                            _verdict(w.judge(f, prefix), group, f, present)
                            if side == "mount"
                            else "",
                        ]
                    )
    for variant in IDLE_VARIANTS:
        key = f"ledger.idle.{variant}"
        idle = f.get(f"{key}.seconds")
        if IDLE_GROUP not in f.errors and idle is None:
            continue
        api, storage = f.get(f"{key}.api"), f.get(f"{key}.storage")
        quiet = None if api is None or storage is None else api.high == 0 and storage.high == 0
        out.append(
            [
                f"idle {idle.median:g} s after one ls" if idle else "idle after one ls",
                variant,
                "mount",
                "-",
                "-",
                "0",
                f"{_n(f, f'{key}.connects.api')}/{_n(f, f'{key}.connects.storage')}",
                f"{_n(f, f'{key}.tls.full')}/{_n(f, f'{key}.tls.resumed')}"
                if TLS_VERSION[variant]
                else "-",
                _n(f, f"{key}.api"),
                _n(f, f"{key}.storage"),
                "-",
                "0 API, 0 storage req",
                _verdict(quiet, IDLE_GROUP, f, idle is not None),
            ]
        )
    return out


def print_table(f: Figures, runs: int) -> None:
    rtt = f"{RTT_MS:.0f} ms"
    print(f"Round-trip ledger (groups ledger, ledger-tls, ledger-idle), RTT {rtt} at two fronts:")
    print_rows(HEADER, rows(f), right={3, 4, 5, 6, 7, 8, 9, 10})
    print()
    print("Ledger notes:")
    for line in (
        "- mount, hosts known: a cold mount of a cache directory that an earlier mount used "
        "(it read one byte of big/ through the fronts: the hosts are remembered, the "
        "workload's folder was never listed and none of its bytes is cached); mount, first "
        "ever: a fresh cache directory, so the storage host is learned from the first signed "
        "URL and its connections cost their set-up on the critical path. The target is "
        "judged on the hosts-known line.",
        f"- medians of {runs} runs, each on a cold mount made at RTT 0 "
        f"through an API front and a storage front (bench/front.py), both forwarding to the "
        f"emulator (latency 0); RTT {rtt} set and all counters zeroed once the mount said ready. "
        "A front delays every chunk by RTT/2 each way, a new connection's first bytes by one "
        "more RTT (the TCP handshake), and carries the TLS handshake's flights (full TLS 1.2: "
        "+2 RT, TLS 1.3 or resumed 1.2: +1 RT).",
        f"- RT all: elapsed seconds / RTT ({rtt}), the tool's whole run (its CPU and the "
        "mount's included): an upper bound on the round trips waited for in series. net (the "
        "hosts-known mount): (its median - the median of the same cold run at RTT 0) / RTT, "
        "the round trips actually waited for on the critical path; the 5-RT target is judged "
        "on it, the seconds target on the elapsed time.",
        "- floor: the fewest round trips with warm connections. One region (BAM, VCF): 4 = "
        "list the folder, resolve both signed URLs in parallel, fetch head + index + tail "
        "together, fetch the region. 10 x 1 kb: 3 + 10, samtools asking for the regions one "
        "after another.",
        "- connects: connections accepted by the API front / the storage front during the "
        "workload (the mount's pool from its start-up at RTT 0 is not counted); TLS: "
        "handshakes at both fronts, full / resumed; API and storage requests: the emulator's.",
        "- tool over HTTP: samtools or tabix reading the signed URLs through the storage front "
        "itself (URL##idx##URL, fetched untimed; CURL_CA_BUNDLE names the throwaway CA), in the "
        "same run; vs HTTP = the mount's median / its median.",
        "- idle: a mount through the fronts (plain, and TLS 1.2) at RTT 40 ms, one ls of its "
        "root, counters zeroed, then REMOTEFS_BENCH_IDLE_SECONDS of idling (default 60): no API "
        "or storage request may be made in any run; the connections the mount opened meanwhile "
        "are reported (the emulator closes idle connections after 30 s, and the pool opens "
        "new ones in their place: TCP and TLS, never a request), with their TLS handshakes, "
        "full / resumed.",
    ):
        print(line)
