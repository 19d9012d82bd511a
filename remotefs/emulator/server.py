"""Serve the emulator app over real HTTP with uvicorn (httptools parser, uvloop loop).

Why uvicorn: the emulator must stream a 1 GiB body faster than any mount can read it
(issue 2: >= 600 MB/s on 2 cores), so that benchmarks measure the mount. uvicorn's C parser
and event loop do that; a pure-Python server (h11) does not. The app stays plain ASGI.

The socket is bound before the server starts (port 0 picks a free port) and
``listening on http://HOST:PORT`` is printed, flushed, only once uvicorn is accepting, so a
parent process can read that line and connect at once.
"""

from __future__ import annotations

import socket
import sys
from typing import TextIO

import uvicorn

from remotefs.emulator.app import EmulatorApp


class _Server(uvicorn.Server):
    announce: TextIO = sys.stdout
    url: str = ""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            print(f"listening on {self.url}", file=self.announce, flush=True)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def serve(app: EmulatorApp, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM."""
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
    )
    server = _Server(config)
    server.url = f"http://{shown_host}:{bound_port}"
    server.run(sockets=[sock])
