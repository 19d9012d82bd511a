"""``remotefs demo``: the emulator with the demo dataset, in one command.

It starts ``remotefs emulator --demo`` as a child process on a free loopback port, prints a
few commands to try, and waits. Ctrl-C (SIGINT) or SIGTERM stops the child by its PID and
exits; nothing is left running. The demo token is a fixed, public value: it opens only this
local emulator.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

DEMO_TOKEN = "demo-token"
START_TIMEOUT = 600.0  # the first run downloads and builds the dataset


def start_emulator(
    cache_dir: Path | None, extra: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``remotefs emulator --demo``; return the process and its base URL."""
    cmd = [sys.executable, "-m", "remotefs", "emulator", "--demo", "--port", "0", *(extra or [])]
    if cache_dir is not None:
        cmd += ["--cache-dir", str(cache_dir)]
    env = dict(os.environ, REMOTEFS_EMULATOR_TOKENS=DEMO_TOKEN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, bufsize=0)
    assert proc.stdout is not None
    line = b""
    deadline = time.monotonic() + START_TIMEOUT
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                stop(proc)
                raise RuntimeError("the emulator did not start in time")
            byte = os.read(proc.stdout.fileno(), 1)
            if not byte:
                raise RuntimeError(f"the emulator exited with status {proc.wait()}")
            line += byte
    return proc, line.decode().strip().removeprefix("listening on ")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def hints(url: str) -> str:
    sb = f'-H "X-SBG-Auth-Token: {DEMO_TOKEN}"'
    odm = f'-H "Genestack-API-Token: {DEMO_TOKEN}"'
    return f"""
remotefs demo: the emulator is serving the demo dataset at {url}
  Seven Bridges API: {url}/v2      Genestack ODM API: {url}/api/v1/as-user
  token (both): {DEMO_TOKEN}

Try:
  curl -s {sb} '{url}/v2/projects/?fields=_all'
  curl -s {sb} '{url}/v2/files?project=demo-user/demo&fields=_all&limit=100'
  curl -s {odm} '{url}/api/v1/as-user/files?filter=%22Data%20Class%22=Epigenomics'
  curl -s {odm} -r 0-3 '{url}/api/v1/as-user/files/ACCESSION/download' | xxd
  curl -s '{url}/_emulator/stats'

Ctrl-C stops it.
"""


def run_demo(cache_dir: Path | None) -> int:
    """Run until Ctrl-C or SIGTERM; return 0 then, 1 if the emulator died on its own."""
    proc, url = start_emulator(cache_dir)  # before blocking signals: children inherit the mask
    waited = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    stopped_by_user = False
    try:
        print(hints(url), flush=True)
        while proc.poll() is None:
            info = signal.sigtimedwait(waited, 1.0)
            if info is not None and info.si_signo != signal.SIGCHLD:
                stopped_by_user = True
                break
    finally:
        stop(proc)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    print("remotefs demo: stopped", flush=True)
    return 0 if stopped_by_user else 1
