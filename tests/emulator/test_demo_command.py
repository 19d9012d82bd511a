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


def test_demo_serves_and_stops_on_ctrl_c(demo_cache: Path) -> None:
    cmd = [sys.executable, "-m", "remotefs", "demo", "--cache-dir", str(demo_cache)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, bufsize=0)
    try:
        out = _read_until(proc, b"Ctrl-C stops it.", 120).decode()
        url = out.split("serving the demo dataset at ")[1].split()[0]
        children = _children(proc.pid)
        assert len(children) == 1
        r = httpx.get(
            f"{url}/v2/projects/demo-user/demo", headers={"X-SBG-Auth-Token": "demo-token"}
        )
        assert r.status_code == 200 and r.json()["id"] == "demo-user/demo"
        r = httpx.get(
            f"{url}/api/v1/as-user/files",
            params={"filter": "genestack:name=random-1GiB.bin"},
            headers={"Genestack-API-Token": "demo-token"},
        )
        assert r.json()["data"][0]["genestack:name"] == "random-1GiB.bin"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not any(_alive(pid) for pid in children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
