"""Start the emulator as a subprocess on 127.0.0.1 and talk to its control routes.

The emulator prints ``listening on URL`` once it accepts connections; we wait for that line
(bounded), never for a sleep. Tokens reach it through the environment, not argv.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from remotefs.ready import NotReady, read_line

START_TIMEOUT = 60.0


@dataclass
class Emulator:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_emulator/stats", timeout=10, trust_env=False).json()

    def requests(self, route: str) -> int:
        return int(self.stats()["requests"].get(route, 0))

    def reset(self) -> None:
        httpx.post(f"{self.url}/_emulator/reset", timeout=10, trust_env=False).raise_for_status()

    def configure(self, **knobs: Any) -> None:
        httpx.post(
            f"{self.url}/_emulator/config", json=knobs, timeout=10, trust_env=False
        ).raise_for_status()

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
    try:
        text = read_line(proc.stdout.fileno(), START_TIMEOUT)
    except NotReady:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise RuntimeError(f"emulator did not start in {START_TIMEOUT} s; see {log}") from None
    if not text:
        proc.stdout.close()
        raise RuntimeError(f"emulator exited with {proc.wait()}: {log.read_text()}")
    assert text.startswith("listening on "), text
    return Emulator(proc, text.removeprefix("listening on "), log)
