"""Workload group ``h5py``: reading one dataset of an .h5ad file with h5py.

h5py opens the demo's .h5ad and reads its largest dataset (``obsm/array``, 30 x 50 float64,
LZF) whole, through a cold mount at 40 ms per request, vs h5py on a local copy. Timed inside a
child process after ``import h5py``, so the interpreter's start is not counted. Reported, not
judged; the emulator's counters give the storage requests and bytes of the mount side.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from bench.common import BenchError
from bench.harness import (
    LATENCY_MS,
    TOOL_TIMEOUT,
    Figures,
    MountBench,
    Row,
    RowNumbers,
    both_orders,
    count_row,
    run_tool,
)
from remotefs.cli import default_cache_root
from remotefs.emulator.demo import DemoBuildError, build_demo

GROUP = "h5py"

H5_DIR = "hdf5"
H5_NAME = "adata.h5ad"
H5_DATASET = "obsm/array"
"""The largest dataset of the demo's .h5ad (30 x 50 float64, LZF)."""

H5_CHILD = """
import sys, time
import h5py
t0 = time.monotonic()
with h5py.File(sys.argv[1], "r") as f:
    values = f[sys.argv[2]][()]
print(time.monotonic() - t0, values.nbytes)
"""


def demo_h5ad() -> Path:
    """The demo dataset's .h5ad (the demo is built once under the remotefs cache root)."""
    try:
        path = build_demo(default_cache_root()) / H5_DIR / H5_NAME
    except DemoBuildError as exc:
        raise BenchError(f"cannot build the demo dataset for its .h5ad: {exc}") from None
    if not path.is_file():
        raise BenchError(f"{path} is missing from the demo dataset")
    return path


def write_data(data: Path, h5ad: Path) -> None:
    """``data/hdf5/adata.h5ad``: a copy, which is also the local reference."""
    (data / H5_DIR).mkdir()
    shutil.copyfile(h5ad, data / H5_DIR / H5_NAME)


def h5py_seconds(path: Path, dataset: str) -> tuple[float, int]:
    """Open ``path`` with h5py and read ``dataset`` whole, in a child; (seconds, bytes read).

    Timed inside the child, after ``import h5py``: the interpreter start is not counted.
    """
    _, out, _ = run_tool([sys.executable, "-c", H5_CHILD, str(path), dataset], TOOL_TIMEOUT)
    seconds, nbytes = out.decode().split()
    return float(seconds), int(nbytes)


class Hdf5:
    """One run of the group: h5py through a cold mount and on the local copy, in either order."""

    def __init__(self, bench: MountBench) -> None:
        self.bench = bench
        self.local = bench.data / H5_DIR / H5_NAME

    def __call__(self, run: int) -> None:
        both_orders(run, self.on_mount, self.on_local_copy)

    def on_mount(self) -> None:
        bench, f = self.bench, self.bench.figures
        with bench.cold_mount("h5", LATENCY_MS):
            seconds, nbytes = h5py_seconds(bench.mnt / H5_DIR / H5_NAME, H5_DATASET)
            counts = bench.emu.counts()
        f.add("h5.mount", seconds)
        f.add("h5.mount.requests", counts.storage_requests)
        f.add("h5.mount.mb", counts.storage_mb)
        f.add("h5.mount.api", counts.api_requests)
        f.notes["h5.bytes"] = f"{nbytes:,} bytes of data"

    def on_local_copy(self) -> None:
        self.bench.figures.add("h5.local", h5py_seconds(self.local, H5_DATASET)[0])


# --- the report -----------------------------------------------------------------------------


def row() -> Row:
    return Row(
        f"h5py, {H5_DATASET} of {H5_NAME}, cold, 40 ms",
        GROUP,
        "h5.mount",
        "s",
        ".3f",
        "h5py on a local copy",
        "h5.local",
        "report",
        None,
    )


def count_rows(f: Figures) -> list[list[str]]:
    return [count_row(f, "h5.mount", f"h5py {H5_DATASET}, mount")]


def notes(f: Figures, n: RowNumbers) -> list[str]:
    return [
        f"- row {n['h5.mount']}: timed inside a child after `import h5py` (open + read of "
        f"{f.notes.get('h5.bytes', '?')})."
    ]
