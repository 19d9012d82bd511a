"""Metadata as xattrs; the emulator dying mid-read; tokens never leaking."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from remotefs.emulator.content import GeneratedContent
from tests.conftest import PROJECT, TOKEN
from tests.support.emulator import start_emulator
from tests.support.fuse import start_mount

DEADLINE = 4.0  # --timeout of the fault mounts; the default is 30 s (README, "Promises")


@pytest.mark.parametrize("platform", ["sevenbridges", "genestack"])
def test_getfattr_shows_platform_metadata(platform: str, mounted_by_platform) -> None:
    mount, emulator = mounted_by_platform(platform)
    folder = mount.path / ("bam" if platform == "sevenbridges" else "all")
    path = folder / "ex1.bam"
    done = subprocess.run(
        ["getfattr", "-d", "--absolute-names", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    ns = "sbg" if platform == "sevenbridges" else "odm"
    assert f'user.{ns}.sample_id="ex1"' in done.stdout
    assert 'user.remotefs.name="ex1.bam"' in done.stdout
    record = json.loads(os.getxattr(path, "user.remotefs.json"))
    ident = os.getxattr(path, "user.remotefs.id").decode()
    if platform == "sevenbridges":
        headers = {"X-SBG-Auth-Token": "mount-test-token"}
        truth = httpx.get(f"{emulator.url}/v2/files/{ident}", headers=headers).json()
        assert record == truth
    else:
        headers = {"Genestack-API-Token": "mount-test-token"}
        truth = httpx.get(f"{emulator.url}/api/v1/as-user/files/{ident}", headers=headers).json()
        assert record == truth


@pytest.fixture
def mounted_by_platform(demo_emulator, tmp_path):
    from tests.mount.conftest import mount_args, odm_env, sb_env

    mounts = []

    def make(platform: str):
        env = sb_env(demo_emulator) if platform == "sevenbridges" else odm_env(demo_emulator)
        m = start_mount(
            tmp_path / "m",
            mount_args(platform, demo_emulator, tmp_path / "c"),
            env,
            tmp_path / "log",
        )
        mounts.append(m)
        return m, demo_emulator

    yield make
    for m in mounts:
        try:
            assert m.unmount() == 0
        finally:
            m.cleanup()


@pytest.mark.parametrize("platform", ["sevenbridges", "genestack"])
def test_emulator_killed_mid_read_gives_eio_then_recovers(
    platform: str, data_dir: Path, tmp_path: Path
) -> None:
    emu = start_emulator(
        ["--data", str(data_dir), "--user", "test-user", "--project", PROJECT],
        tmp_path / "emu.log",
        (TOKEN,),
    )
    port = int(emu.url.rsplit(":", 1)[1])
    if platform == "sevenbridges":
        env = {"SB_AUTH_TOKEN": TOKEN, "SB_API_ENDPOINT": f"{emu.url}/v2"}
        args = ["--platform", platform, "--api-url", f"{emu.url}/v2", "--project", PROJECT]
        rel = "big/gen.bin"
    else:
        env = {"GENESTACK_API_TOKEN": TOKEN}
        args = ["--platform", platform, "--api-url", emu.url]
        rel = "all/gen.bin"
    args += ["--cache-dir", str(tmp_path / "cache"), "--timeout", str(DEADLINE)]
    source = GeneratedContent(3_000_001, seed=5)
    mount = None
    try:
        mount = start_mount(tmp_path / "m", args, env, tmp_path / "mount.log")
        fd = os.open(mount.path / rel, os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, 0) == source.read(0, 4096)
            emu.kill()  # the platform disappears mid-read
            started = time.monotonic()
            with pytest.raises(OSError) as info:
                os.pread(fd, 4096, 2_500_000)  # an uncached block
            elapsed = time.monotonic() - started
            assert info.value.errno == errno.EIO
            assert elapsed < DEADLINE + 5, elapsed
            assert os.pread(fd, 4096, 100) == source.read(100, 4096)  # cached: still served
            os.listdir(mount.path)  # a cached folder still lists
            emu = start_emulator(
                ["--data", str(data_dir), "--user", "test-user", "--project", PROJECT],
                tmp_path / "emu.log",
                (TOKEN,),
                port=port,
            )
            assert os.pread(fd, 4096, 2_500_000) == source.read(2_500_000, 4096)  # no remount
        finally:
            os.close(fd)
        assert mount.unmount() == 0
    finally:
        if mount is not None:
            mount.cleanup()
        emu.stop()


def test_token_never_in_logs_or_cmdline(data_dir: Path, tmp_path: Path) -> None:
    secret = "s3cr3t-T0KEN-value-1234567890"
    emu = start_emulator(
        ["--data", str(data_dir), "--user", "test-user", "--project", PROJECT],
        tmp_path / "emu.log",
        (secret,),
    )
    log = tmp_path / "mount.log"
    mount = None
    try:
        env = {"SB_AUTH_TOKEN": secret, "SB_API_ENDPOINT": f"{emu.url}/v2"}
        args = [
            "--platform",
            "sevenbridges",
            "--project",
            PROJECT,
            "--cache-dir",
            str(tmp_path / "cache"),
            "--debug",
        ]
        mount = start_mount(tmp_path / "m", args, env, log)
        cmdline = Path(f"/proc/{mount.pid}/cmdline").read_bytes()
        assert secret.encode() not in cmdline
        subprocess.run(["ls", "-lR", str(mount.path)], capture_output=True, check=True)
        (mount.path / "reads" / "sample.bin").read_bytes()
        subprocess.run(["getfattr", "-d", "-R", str(mount.path / "reads")], capture_output=True)
        with pytest.raises(OSError):
            (mount.path / "reads" / "nope").read_bytes()
        assert mount.unmount() == 0
        # A refused token: a one-line error naming the problem, no traceback, no token.
        bad = subprocess.run(
            [
                sys.executable,
                "-m",
                "remotefs",
                "mount",
                str(tmp_path / "m"),
                "--foreground",
                "--platform",
                "sevenbridges",
                "--project",
                PROJECT,
                "--cache-dir",
                str(tmp_path / "cache"),
            ],
            env=dict(os.environ, SB_AUTH_TOKEN=secret + "x", SB_API_ENDPOINT=f"{emu.url}/v2"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bad.returncode != 0
        assert secret not in bad.stderr + bad.stdout
        assert "Traceback" not in bad.stderr
        assert "refused" in bad.stderr.splitlines()[-1]
    finally:
        if mount is not None:
            mount.cleanup()
        emu.stop()
    text = log.read_text()
    assert "DEBUG" in text  # the log really was at debug level
    assert secret not in text
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
