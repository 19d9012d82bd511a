"""Issue 19: connections opened ahead of requests, seen through a real mount.

A mount opens its API connections as it starts (``remotefs.pool``), so the requests that
follow find them open: a cold read of a BAM and its index (two ``download_info`` and the
storage requests beside them, all to the emulator's one origin here) opens no connection of
its own. ``remotefs status`` shows the pool's counters."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.mount.conftest import emulated, platform_mount
from tests.support.expect import mount_files

WARM = 4  # remotefs.http.client.WARM_CONNECTIONS


def connections(mount_path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "remotefs", "status", "--json", str(mount_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    conns: dict[str, Any] = json.loads(done.stdout)["connections"]
    return conns


def test_a_cold_read_finds_its_connections_already_open(demo_tree: Path, tmp_path: Path) -> None:
    expected = mount_files(demo_tree, "sevenbridges")
    with emulated(demo_tree, tmp_path) as emu:
        with platform_mount("sevenbridges", emu, tmp_path) as m:
            deadline = time.monotonic() + 20
            while (before := connections(m.path))["idle"] < WARM:  # opened as it started
                assert time.monotonic() < deadline, before
            assert before["opened_ahead"] >= WARM - 1 and before["opening"] == 0
            emu.reset()
            for name in ("bam/ex1.bam", "bam/ex1.bam.bai"):
                assert (m.path / name).read_bytes() == expected[name].read()
            after = connections(m.path)
            requests = emu.stats()["requests"]
            assert requests.get("sb.download_info") == 2 and requests.get("sb.storage", 0) >= 2
            assert after["connects"] == before["connects"], (before, after)
            assert after["closed_idle"] == 0
        assert "Traceback" not in m.log.read_text()
