"""The command line: ``scripts/bench emulator …`` and ``scripts/bench mount …``.

Exit status: 0 whatever the figures (a benchmark reports, it does not fail CI); 1 if something
broke (the emulator did not start, a transfer came back short, a workload failed, ...); 2 on a
usage error; 130 on Ctrl-C. SIGTERM unwinds like an error, so that every ``finally`` (the
emulator, the mounts, the temporary directories) runs.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import bench
from bench import cluster, emulator, mount, odm_names
from bench.common import DEFAULT_SIZE, BenchError


def _raise_on_sigterm(signum: int, frame: Any) -> NoReturn:
    raise SystemExit(128 + signum)  # so every ``finally`` (emulator, temp dir) runs


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
    description = (bench.__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="scripts/bench", description=description)
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUB-COMMAND")
    p = sub.add_parser("emulator", help="the emulator's own download throughput, vs file://")
    p.add_argument(
        "--runs", type=_positive(1), default=emulator.DEFAULT_RUNS, help="default %(default)s"
    )
    p.add_argument(
        "--size",
        type=_positive(emulator.PARALLEL),
        default=DEFAULT_SIZE,
        help="bytes of the generated file (default %(default)s, the demo's 1 GiB)",
    )
    p.set_defaults(func=lambda args: emulator.main(args.runs, args.size))
    m = sub.add_parser("mount", help="workloads through a real mount, each vs a reference")
    m.add_argument(
        "--runs",
        type=_positive(3),
        default=mount.MOUNT_RUNS,
        help="runs of every workload, at least 3 (default %(default)s)",
    )
    m.add_argument(
        "--quick",
        action="store_true",
        help=f"a {mount.QUICK_SIZE >> 20} MiB file instead of 1 GiB; skip the 100,000-entry folder",
    )
    m.add_argument(
        "--only",
        action="append",
        choices=list(mount.GROUP_NAMES),
        help="run only this group of workloads (repeatable); the others' rows show '-'",
    )
    m.set_defaults(func=lambda args: mount.main(args.runs, args.quick, args.only))
    c = sub.add_parser(
        "cluster", help="N mounts of one token under a tight budget, with and without Redis"
    )
    c.add_argument("--runs", type=_positive(1), default=cluster.RUNS, help="default %(default)s")
    c.add_argument(
        "--nodes",
        type=_positive(1),
        action="append",
        help="mounts in one run (repeatable; default 1, 2, 4 and 8; the first is the reference)",
    )
    c.set_defaults(func=lambda args: cluster.main(args.runs, tuple(args.nodes or cluster.SIZES)))
    o = sub.add_parser("odm-names", help="an ODM folder walked by names and by attributes at 40 ms")
    o.add_argument("--runs", type=_positive(1), default=odm_names.RUNS, help="default %(default)s")
    o.add_argument(
        "--files", type=_positive(1), default=odm_names.FILES, help="default %(default)s"
    )
    o.set_defaults(func=lambda args: odm_names.main(args.runs, args.files))
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
