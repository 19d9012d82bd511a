"""Start the emulator as a subprocess on 127.0.0.1 and talk to its control routes.

The emulator prints ``listening on URL`` once it accepts connections; we wait for that line
(bounded), never for a sleep. Tokens reach it through the environment, not argv.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

START_TIMEOUT = 60.0


@dataclass
class Emulator:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_emulator/stats", timeout=10).json()

    def requests(self, route: str) -> int:
        return int(self.stats()["requests"].get(route, 0))

    def reset(self) -> None:
        httpx.post(f"{self.url}/_emulator/reset", timeout=10).raise_for_status()

    def configure(self, **knobs: Any) -> None:
        httpx.post(f"{self.url}/_emulator/config", json=knobs, timeout=10).raise_for_status()

    def kill(self) -> None:
        """SIGKILL: the platform vanishes without a goodbye (fault tests)."""
        self.proc.kill()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_emulator(
    args: list[str], log: Path, tokens: tuple[str, ...] = ("test-token",), port: int = 0
) -> Emulator:
    env = dict(os.environ, REMOTEFS_EMULATOR_TOKENS=",".join(tokens))
    cmd = [sys.executable, "-m", "remotefs", "emulator", "--port", str(port), *args]
    logfile = open(log, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=logfile, env=env, bufsize=0)
    logfile.close()
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    line = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                proc.kill()
                raise RuntimeError(f"emulator did not start in {START_TIMEOUT} s; see {log}")
            byte = os.read(proc.stdout.fileno(), 1)  # unbuffered: the selector sees all
            if not byte:
                raise RuntimeError(
                    f"emulator exited with {proc.wait()}; see {log}: {log.read_text()}"
                )
            line += byte
    text = line.decode().strip()
    assert text.startswith("listening on "), text
    return Emulator(proc, text.removeprefix("listening on "), log)
