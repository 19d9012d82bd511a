"""The rendered systemd unit, and the mountinfo reader (remotefs.systemd, remotefs.mounts)."""

from __future__ import annotations

from pathlib import Path

from remotefs.mounts import mount_at, mounts
from remotefs.systemd import unit_file


def test_the_unit_runs_this_installation_and_documents_it() -> None:
    unit = unit_file()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    program = exec_start.removeprefix("ExecStart=").split()[0]
    assert Path(program).is_absolute() and Path(program).exists(), program
    documentation = next(line for line in unit.splitlines() if line.startswith("Documentation="))
    target = documentation.removeprefix("Documentation=")
    assert target.startswith("file://") and Path(target.removeprefix("file://")).is_file()
    assert "Type=notify" in unit and "${REMOTEFS_MOUNTPOINT}" in unit


def test_mountinfo_knows_the_root_and_escapes() -> None:
    root = mount_at(Path("/"))
    assert root is not None and root.mountpoint == "/"
    assert mount_at(Path("/definitely/not/mounted")) is None
    assert all(" " not in m.fstype for m in mounts())
