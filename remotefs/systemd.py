"""systemd: ``sd_notify`` without a dependency, and the unit file of this installation.

- :func:`notify`: one datagram to ``$NOTIFY_SOCKET`` (``Type=notify`` units).
- :func:`unit_file`: ``remotefs@.service``, rendered for the ``remotefs`` that prints it: its
  ``ExecStart`` is that program's absolute path (a venv, pipx, pip --user: no PATH needed)
  and its ``Documentation=`` the README installed beside it
  (``<prefix>/share/doc/remotefs/README.md``, or the source tree's for an editable install).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

UNIT_TEMPLATE = """\
# remotefs: mount a platform at boot (system unit) or at login (user unit).
# Made by `remotefs systemd-unit` for {program}.
#
# The instance name is a profile: /etc/remotefs/%i.env (system) or
# ~/.config/remotefs/%i.env (user) holds the options and, for the credentials, the same
# variables the platforms' own clients read, e.g.
#
#   REMOTEFS_MOUNTPOINT=/mnt/cavatica
#   REMOTEFS_ARGS=--platform sevenbridges --project my-lab/my-project --profile cavatica
#   # or: REMOTEFS_ARGS=--platform genestack --api-url https://odm.example.org
#   #         --token-file /etc/remotefs/odm.token   (on one line)
#
# Seven Bridges tokens stay in ~/.sevenbridges/credentials (--profile) or a 0600 file
# (--token-file); Genestack tokens in a 0600 file (--token-file) or GENESTACK_API_TOKEN in the
# env file (make it 0600): never in REMOTEFS_ARGS, which `ps` shows.
#
#   remotefs systemd-unit > ~/.config/systemd/user/remotefs@.service
#   systemctl --user enable --now remotefs@cavatica      (user: mounts at login)
#   remotefs systemd-unit > /etc/systemd/system/remotefs@.service
#   systemctl enable --now remotefs@cavatica             (system: mounts at boot)

[Unit]
Description=remotefs mount %i
Documentation={documentation}
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
EnvironmentFile=-/etc/remotefs/%i.env
EnvironmentFile=-%h/.config/remotefs/%i.env
ExecStartPre=/bin/mkdir -p ${{REMOTEFS_MOUNTPOINT}}
ExecStart={program} mount ${{REMOTEFS_MOUNTPOINT}} --foreground $REMOTEFS_ARGS
# A clean stop: unmount; remotefs then closes its FUSE session and exits 0. An unexpected
# end is logged at CRITICAL and exits 70: the unit fails, and is restarted.
ExecStop=/bin/fusermount3 -u ${{REMOTEFS_MOUNTPOINT}}
KillMode=mixed
TimeoutStopSec=30
Restart=on-failure
RestartSec=10

[Install]
WantedBy=default.target
"""


def notify(message: str) -> bool:
    """Send ``message`` (``READY=1``, ``STOPPING=1``…) to systemd; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True


def installed_readme() -> Path | None:
    """The README this installation carries: ``<prefix>/share/doc/remotefs/README.md`` (pip
    puts it there), else the source tree's (an editable install)."""
    for candidate in (
        Path(sys.prefix) / "share" / "doc" / "remotefs" / "README.md",
        Path(__file__).resolve().parents[1] / "README.md",
    ):
        if candidate.is_file():
            return candidate
    return None


def unit_file() -> str:
    """``remotefs@.service`` for the ``remotefs`` program running now."""
    program = shutil.which("remotefs", path=str(Path(sys.executable).parent))
    program = program or shutil.which("remotefs") or f"{sys.executable} -m remotefs"
    readme = installed_readme()
    documentation = readme.as_uri() if readme else "man:fusermount3(1)"
    return UNIT_TEMPLATE.format(program=program, documentation=documentation)
