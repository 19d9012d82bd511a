"""A real ``redis-server`` on a free loopback port, started by the test and stopped by PID.

Nothing is persisted (``--save ''``, no AOF) and nothing outside 127.0.0.1 can connect.
Readiness is a bounded poll of ``PING`` over a socket, never a sleep. The server can be
killed (``SIGKILL``: the cluster's store vanishes) and started again on the same port.
The test talks to it with ``redis-cli`` (Debian's redis-tools, which redis-server needs).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 20.0


def redis_unavailable() -> str | None:
    for program in ("redis-server", "redis-cli"):
        if shutil.which(program) is None:
            return f"no {program} (scripts/setup installs redis-server)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Redis:
    port: int
    log: Path
    password: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--protected-mode", "yes"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer in {START_TIMEOUT} s")
            time.sleep(0.02)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def kill(self) -> None:
        """SIGKILL, by PID: no goodbye to its clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def cli(self, *args: str, raw: bool = False) -> bytes:
        """One ``redis-cli`` command's output (the password through the environment)."""
        env = {"REDISCLI_AUTH": self.password} if self.password else {}
        command = ["redis-cli", "-p", str(self.port), "--no-raw" if not raw else "--raw", *args]
        done = subprocess.run(
            command, capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin", **env}
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def all_keys(self) -> list[str]:
        return sorted(filter(None, self.cli("--scan", raw=True).decode().split("\n")))

    def dump(self) -> dict[str, bytes]:
        """Every string key's value (bytes as stored), and the other keys' types."""
        values = {}
        for key in self.all_keys():
            kind = self.cli("TYPE", key, raw=True).strip()
            if kind == b"string":
                values[key] = self.get(key)
            else:
                values[key] = b"<" + kind + b">"
        return values

    def get(self, key: str) -> bytes:
        """A string value's exact bytes (``redis-cli --raw`` would add a newline)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            if self.password:
                s.sendall(_command("AUTH", self.password))
                assert _reply(s) == b"OK"
            s.sendall(_command("GET", key))
            value = _reply(s)
        assert isinstance(value, bytes)
        return value

    def set(self, key: str, value: bytes) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            if self.password:
                s.sendall(_command("AUTH", self.password))
                assert _reply(s) == b"OK"
            s.sendall(_command("SET", key, value))
            assert _reply(s) == b"OK"


def _command(*parts: str | bytes) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _reply(s: socket.socket) -> bytes | None:
    """One RESP2 reply: a simple string, a bulk string, or nil."""
    buffer = s.makefile("rb")
    line = buffer.readline()
    if line.startswith(b"+"):
        return line[1:].rstrip(b"\r\n")
    if line.startswith(b"$"):
        length = int(line[1:])
        if length < 0:
            return None
        data = buffer.read(length + 2)
        return data[:-2]
    raise AssertionError(f"unexpected reply {line!r}")
