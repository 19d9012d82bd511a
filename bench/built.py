"""Data files the benchmarks generate once, deterministically, and reuse across sessions.

A file (and its index) lives under ``$XDG_CACHE_HOME/remotefs/bench/VERSION/``. It is built
in a temporary directory beside that one and renamed into place only once it is complete and
at least as large as expected, so an interrupted build leaves nothing that looks finished;
bumping ``VERSION`` builds afresh. Generators write their text into a tool's standard input
(``samtools view``, ``bgzip``) through :func:`feed`, which fails with the tool's last words.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from bench.common import STOP_TIMEOUT, BenchError
from remotefs.config import default_cache_root

BUILD_TIMEOUT = 1800.0


def build_once(
    version: str,
    name: str,
    index_suffix: str,
    tools: dict[str, str],
    what: str,
    min_bytes: int,
    build: Callable[[Path], None],
) -> Path:
    """The file ``name`` (and ``name + index_suffix``) of ``version``: reused when both exist,
    else made by ``build(directory)`` in a fresh directory. ``tools``: program → the Debian
    package that has it; ``what``: how the build is described while it runs."""
    final = default_cache_root() / "bench" / version
    path = final / name
    if path.is_file() and (final / f"{name}{index_suffix}").is_file():
        print(f"bench: reusing {path} ({path.stat().st_size:,} bytes)", file=sys.stderr)
        return path
    for tool, package in tools.items():
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (apt-get install {package})")
    final.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{version}.building-", dir=final.parent))
    try:
        t0 = time.monotonic()
        print(f"bench: building {path} (once; {what}) ...", file=sys.stderr)
        build(building)
        size = (building / name).stat().st_size
        if size < min_bytes:
            raise BenchError(f"the generated {name} has {size:,} bytes, fewer than {min_bytes:,}")
        shutil.rmtree(final, ignore_errors=True)
        os.rename(building, final)
        print(
            f"bench: built {path} ({size:,} bytes) in {time.monotonic() - t0:.0f} s",
            file=sys.stderr,
        )
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return path


def feed(
    argv: list[str], write: Callable[[IO[bytes]], None], cwd: Path, stdout: Path | None = None
) -> None:
    """Run ``argv`` in ``cwd`` with ``write`` filling its standard input (its output to
    ``stdout`` when given); ``BenchError`` with the end of its error output unless it exits 0."""
    log_path = cwd / f".{argv[0]}.log"
    with open(log_path, "wb") as log, open(stdout or os.devnull, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=log, cwd=cwd)
    assert proc.stdin is not None
    try:
        write(proc.stdin)
        proc.stdin.close()
        rc = proc.wait(timeout=BUILD_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-500:]
        raise BenchError(f"{' '.join(argv[:3])} failed (exit {rc}): {tail}")
    log_path.unlink()
