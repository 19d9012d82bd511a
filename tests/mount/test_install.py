"""Issue 15: a real install, and fstab.

A fresh venv gets ``pip install .`` (no extras): ``remotefs`` and ``mount.remotefs`` are on
its PATH, the emulator's server stack is not, and that install mounts the emulator (run
from the test's own environment). Then ``mount -T FSTAB`` mounts both platforms, as type
``remotefs`` (``/sbin/mount.remotefs``) and as ``fuse.remotefs`` (``mount.fuse3`` runs
``remotefs`` from ``/usr/local/bin``), each linked to the venv's for the test and removed
after; ``umount``
unmounts; an unknown option is a one-line error and mounts nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import PROJECT, TOKEN
from tests.support.emulator import Emulator
from tests.support.fuse import is_mounted

REPO = Path(__file__).resolve().parents[2]
HELPER = Path("/sbin/mount.remotefs")
"""Where ``mount`` looks for the helper of type ``remotefs`` (``/sbin`` only)."""
PROGRAM = Path("/usr/local/bin/remotefs")
"""Where ``mount.fuse3`` finds ``remotefs`` for type ``fuse.remotefs``: ``mount`` runs its
helpers with no PATH, so the shell's default applies (``/usr/local/bin``, ``/usr/bin``, …)."""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with ``pip install .`` of this checkout: its ``bin``."""
    venv = tmp_path_factory.mktemp("install") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
         str(REPO)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return venv / "bin"


def run(argv: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=120, **kwargs
    )  # type: ignore[call-overload]


def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n")
    path.chmod(0o600)
    return path


@contextmanager
def unmounted_after(*mountpoints: Path) -> Iterator[None]:
    try:
        yield
    finally:
        for path in mountpoints:
            if is_mounted(path):
                subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


def test_a_plain_install_has_both_commands_and_mounts(
    installed: Path, emulator: Emulator, tmp_path: Path
) -> None:
    assert (installed / "remotefs").exists() and (installed / "mount.remotefs").exists()
    no_stack = run([installed / "python", "-c", "import uvicorn"])
    assert no_stack.returncode != 0  # a mount needs no server stack
    refused = run([installed / "remotefs", "emulator", "--demo"])
    assert refused.returncode == 2 and "remotefs[emulator]" in refused.stderr
    assert refused.stderr.count("\n") == 1
    unit = run([installed / "remotefs", "systemd-unit"]).stdout
    documentation = next(line for line in unit.splitlines() if line.startswith("Documentation="))
    assert Path(documentation.removeprefix("Documentation=file://")).is_file()
    assert f"ExecStart={installed / 'remotefs'} mount" in unit

    mountpoint = tmp_path / "m"
    mountpoint.mkdir()
    with unmounted_after(mountpoint):
        done = run(
            [installed / "remotefs", "mount", mountpoint, "--platform", "sevenbridges",
             "--api-url", f"{emulator.url}/v2", "--project", PROJECT,
             "--token-file", token_file(tmp_path), "--cache-dir", tmp_path / "cache"],
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "reads" in os.listdir(mountpoint)
        assert (mountpoint / "reads" / "small.txt").read_text() == "hello remotefs\n"
        assert run([installed / "remotefs", "umount", mountpoint]).returncode == 0
        assert not is_mounted(mountpoint)


def test_fstab_mounts_both_platforms_and_umount_unmounts(
    installed: Path, emulator: Emulator, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mount -T needs root")
    token = token_file(tmp_path)
    sb, odm, bad = (tmp_path / name for name in ("sb", "odm", "bad"))
    for path in (sb, odm, bad):
        path.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"sevenbridges:{PROJECT} {sb} remotefs "
        f"api_url={emulator.url}/v2,token_file={token},cache_dir={tmp_path}/c1,_netdev 0 0\n"
        f"genestack:{emulator.url} {odm} fuse.remotefs "
        f"token_file={token},cache_dir={tmp_path}/c2,nofail,x-systemd.automount 0 0\n"
    )
    bad_fstab = tmp_path / "fstab.bad"
    bad_fstab.write_text(f"sevenbridges:{PROJECT} {bad} remotefs cache-size=1G 0 0\n")
    links = [
        (link, installed / target)
        for link, target in ((HELPER, "mount.remotefs"), (PROGRAM, "remotefs"))
        if not link.exists() and not link.is_symlink()
    ]  # what a root install does by itself (PROGRAM) or the README says to do (HELPER)
    for link, target in links:
        link.symlink_to(target)
    try:
        with unmounted_after(sb, odm, bad):
            for mountpoint, listed in ((sb, "reads"), (odm, "all")):
                done = run(["mount", "-T", fstab, mountpoint])
                assert done.returncode == 0, done.stderr
                assert listed in os.listdir(mountpoint)
                assert run(["umount", mountpoint]).returncode == 0
                assert not is_mounted(mountpoint)
            done = run(["mount", "-T", fstab, "-a"])  # both at once
            assert done.returncode == 0, done.stderr
            assert is_mounted(sb) and is_mounted(odm)
            assert run(["umount", sb]).returncode == 0 and run(["umount", odm]).returncode == 0
            done = run(["mount", "-T", bad_fstab, bad])
            assert done.returncode != 0 and not is_mounted(bad)
            assert "unknown option 'cache-size=1G'" in done.stderr
            assert done.stderr.strip().count("\n") == 0, done.stderr
    finally:
        for link, _ in links:
            link.unlink()
