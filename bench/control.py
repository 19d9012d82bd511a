"""Group ``control``: ``remotefs warm`` and ``remotefs status`` (issue 16).

- ``remotefs warm`` of the big file on a fresh mount, against a cold ``dd bs=1M`` of the same
  file on another fresh mount, in the same run (either order): MB/s of each, target >= 0.9x.
  A warm fetches in 4 MiB pieces, 12 at once, behind any reader's own fetches.
- the control socket's answer to a status request while ``dd`` streams the big file through
  the same mount: the median of 20 requests, each timed from connect to the last byte (the
  ``remotefs status`` command adds its Python start-up to that), target < 50 ms.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from bench.common import BIG_PATH, BenchError, mbps
from bench.harness import MountBench, Row, both_orders, ratio_at_least, run_tool
from bench.sequential import dd_mbps, size_label
from remotefs.client import ask, control_socket

GROUP = "control"
STATUS_SAMPLES = 20


class Control:
    def __init__(self, bench: MountBench) -> None:
        self.bench = bench

    def __call__(self, run: int) -> None:
        both_orders(run, self.warm, self.cold_dd)
        self.status_while_streaming()

    def warm(self) -> None:
        bench = self.bench
        with bench.cold_mount("warm", 0):
            seconds, _, err = run_tool(
                [sys.executable, "-m", "remotefs", "warm", "--quiet", str(bench.mnt / BIG_PATH)],
                600,
            )
            if bench.emu.counts().storage_mb * 1e6 < bench.size:
                raise BenchError(f"remotefs warm fetched too little: {err[-300:]!r}")
            bench.figures.add("ctl.warm", mbps(bench.size, seconds))

    def cold_dd(self) -> None:
        bench = self.bench
        with bench.cold_mount("warm-ref", 0):
            bench.figures.add("ctl.dd", dd_mbps(bench.mnt / BIG_PATH, bench.size))

    def status_while_streaming(self) -> None:
        bench = self.bench
        with bench.cold_mount("status", 0):
            socket_path = control_socket(bench.mnt)
            stream = subprocess.Popen(
                ["dd", f"if={bench.mnt / BIG_PATH}", "of=/dev/null", "bs=1M"],
                stderr=subprocess.DEVNULL,
            )
            try:
                times = []
                for _ in range(STATUS_SAMPLES):
                    t0 = time.monotonic()
                    (answer,) = list(ask(socket_path, {"op": "status"}, last="status"))
                    times.append((time.monotonic() - t0) * 1000)
                    if answer["in_flight"]["fetches"] == 0 and stream.poll() is not None:
                        break
                    time.sleep(0.05)
            finally:
                stream.kill()
                stream.wait()
            bench.figures.add("ctl.status", statistics.median(times))


def rows(size: int) -> list[Row]:
    return [
        Row(
            f"remotefs warm of the {size_label(size)} file",
            GROUP,
            "ctl.warm",
            "MB/s",
            ",.0f",
            "a cold dd bs=1M of it",
            "ctl.dd",
            ">= 0.9x",
            ratio_at_least(0.9),
        ),
        Row(
            "status answer while dd streams",
            GROUP,
            "ctl.status",
            "ms",
            ".1f",
            target="< 50 ms",
            passes=lambda row, f: f.median("ctl.status") < 50,
        ),
    ]
