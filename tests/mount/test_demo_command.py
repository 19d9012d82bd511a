"""``remotefs demo``: starts, serves the demo dataset, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while marker not in out:
            left = deadline - time.monotonic()
            assert left > 0 and sel.select(left), f"no {marker!r} in {out!r}"
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"demo exited early: {out!r}"
            out += chunk
    return out


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_demo_mounts_and_stops_on_ctrl_c(demo_cache: Path, tmp_path: Path) -> None:
    root = tmp_path / "demo"
    cmd = [sys.executable, "-m", "remotefs", "demo", str(root), "--cache-dir", str(demo_cache)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, bufsize=0)
    children: list[int] = []
    try:
        out = _read_until(proc, b"Ctrl-C unmounts and stops everything.", 180).decode()
        url = out.split("served by a local emulator at ")[1].split(",")[0]
        children = _children(proc.pid)
        assert len(children) == 3  # the emulator and two mounts
        sb, odm = root / "sevenbridges", root / "genestack"
        assert os.path.ismount(sb) and os.path.ismount(odm)
        assert "ex1.bam" in os.listdir(sb / "bam")
        assert "ex1.bam" in os.listdir(odm / "all")
        assert str(sb / "bam/ex1.bam") in out  # the hints name real paths
        assert "token is demo-token" in out  # the emulator's token, so curl can use the API
        h5py_hint = next(line for line in out.splitlines() if "import h5py" in line)
        assert str(sb / "hdf5/adata.h5ad") in h5py_hint
        command = h5py_hint.strip().split(" -c ", 1)
        done = subprocess.run([command[0], "-c", command[1].strip("'")], capture_output=True)
        assert done.returncode == 0 and b"obs" in done.stdout  # it runs, as printed
        r = httpx.get(f"{url}/_emulator/stats")
        assert r.json()["requests"]["sb.files.list"] >= 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert not any(_alive(pid) for pid in children)
        assert not root.exists()  # it made the directories, it removed them
        mounts = Path("/proc/mounts").read_text()
        assert str(root) not in mounts
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        for sub in ("sevenbridges", "genestack"):
            if os.path.ismount(root / sub):
                subprocess.run(["fusermount3", "-u", "-z", str(root / sub)], check=False)
        assert proc.stdout is not None
        proc.stdout.close()
