"""remotefs in ``/etc/fstab``: the ``mount.remotefs`` helper.

::

    # SOURCE                           MOUNTPOINT     TYPE      OPTIONS
    sevenbridges:my-lab/my-project     /mnt/cavatica  remotefs  profile=cavatica,_netdev  0 0
    sevenbridges:                      /mnt/sbg       remotefs  profile=cavatica,_netdev  0 0
    genestack:https://odm.example.org  /mnt/odm       remotefs  token_file=/etc/odm.tok   0 0

(more options: ``cache_size=50G``, ``x-systemd.automount``, ``timeout=60``, …)

``mount`` runs ``/sbin/mount.remotefs SOURCE MOUNTPOINT [-sfnv] -o OPTIONS`` for type
``remotefs`` (it looks for helpers in ``/sbin`` only: link the installed one there), and
``mount.fuse3`` runs ``remotefs SOURCE MOUNTPOINT -o OPTIONS`` for type ``fuse.remotefs``
(``remotefs`` found in ``/usr/local/bin`` or ``/usr/bin``: ``mount`` runs helpers without
the caller's PATH); both come here. The source names the platform and its
target: ``sevenbridges:OWNER/PROJECT`` (one project as the root), ``sevenbridges:`` (every
project), ``genestack:URL`` (the ODM host). Options are ``remotefs mount``'s, with ``_``
for ``-``: ``profile``, ``api_url``, ``token_file``, ``cache_dir``, ``cache_size``, ``ttl``,
``timeout``, ``allow_other``, ``debug``, ``shared_state`` (its password in
``shared_state_password_file``, never in the URL), …. Options meant for ``mount`` or
systemd (``defaults``, ``_netdev``, ``nofail``, ``noauto``, ``x-*``, ``ro``, ``noatime``, …)
are ignored (``rw`` too, which ``mount`` adds by itself: the mount is read-only whatever
the line says). Anything else is a one-line error and nothing is mounted (``-s``, sloppy,
ignores unknown options); so is a token in the options: fstab and ``/proc/mounts`` are
world-readable, so credentials come from the profile (``~/.sevenbridges/credentials``) or a
token file.

The helper returns once the mount is ready (the mount runs on in the background, as
``remotefs mount`` does), with ``mount``'s exit statuses: 0, 1 for a usage error, 32 for a
mount that failed. ``umount MOUNTPOINT`` unmounts it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from remotefs.config import PLATFORMS
from remotefs.redis_url import has_password

EXIT_USAGE = 1
EXIT_MOUNT_FAILED = 32
VALUED = {
    "profile": "--profile",
    "api_url": "--api-url",
    "token_file": "--token-file",
    "cache_dir": "--cache-dir",
    "cache_size": "--cache-size",
    "ttl": "--ttl",
    "timeout": "--timeout",
    "sniffer": "--sniffer",
    "filter": "--filter",
    "query": "--query",
    "sniffer_bytes": "--sniffer-bytes",
    "shared_state": "--shared-state",
    "shared_state_ca": "--shared-state-ca",
    "shared_state_password_file": "--shared-state-password-file",
}
"""fstab option → ``remotefs mount`` option taking its value."""
FLAGS = {
    "allow_other": "--allow-other",
    "debug": "--debug",
    "no_default_sniffers": "--no-default-sniffers",
}
FOR_MOUNT = frozenset(
    {
        "defaults", "ro", "rw", "auto", "noauto", "user", "users", "nouser", "owner", "group",
        "nofail", "_netdev", "noatime", "atime", "relatime", "strictatime", "nodiratime",
        "nodev", "dev", "nosuid", "suid", "exec", "noexec", "sync", "async", "nouser_xattr",
    }
)  # fmt: skip
"""Options for ``mount``, the kernel or systemd, not for remotefs: accepted and ignored."""
FOR_MOUNT_PREFIXES = ("x-", "comment=", "fsname=", "subtype=")
SECRETS = frozenset({"token", "auth_token", "api_token", "access_token", "password"})


class FstabError(ValueError):
    """A source or an option remotefs cannot take; printed as one line."""


def mount_arguments(
    source: str, mountpoint: str, options: str, *, sloppy: bool = False
) -> list[str]:
    """The ``remotefs mount`` arguments for one fstab line's source, mount point and options.

    Raises:
        FstabError: an unknown platform, a malformed source, an unknown option (unless
            ``sloppy``), or a token among the options.
    """
    platform, colon, target = source.partition(":")
    if not colon or platform not in PLATFORMS:
        raise FstabError(
            f"source {source!r}: expected sevenbridges:OWNER/PROJECT, sevenbridges: or "
            "genestack:URL"
        )
    args = [mountpoint, "--platform", platform]
    if platform == "sevenbridges" and target:
        if target.count("/") != 1 or not all(target.split("/")):
            raise FstabError(f"source {source!r}: the project is OWNER/PROJECT")
        args += ["--project", target]
    elif platform == "genestack":
        if not target:
            raise FstabError(f"source {source!r}: name the ODM host, genestack:https://…")
        args += ["--api-url", target]
    for option in filter(None, (o.strip() for o in options.split(","))):
        name, equals, value = option.partition("=")
        if name in SECRETS:
            raise FstabError(
                f"option {name}: tokens never go in mount options (fstab and /proc/mounts "
                "are readable by every user); use profile= or token_file="
            )
        if name == "shared_state" and has_password(value):
            raise FstabError(
                "option shared_state: a password never goes in mount options (fstab is "
                "readable by every user); use shared_state_password_file="
            )
        if name in VALUED and equals:
            args += [VALUED[name], value]
        elif name in FLAGS and not equals:
            args.append(FLAGS[name])
        elif option in FOR_MOUNT or option.startswith(FOR_MOUNT_PREFIXES):
            continue
        elif not sloppy:
            known = ", ".join(sorted([*VALUED, *FLAGS]))
            raise FstabError(f"unknown option {option!r} (remotefs takes: {known})")
    return args


def parse_helper_argv(argv: list[str]) -> tuple[str, str, str, bool, bool]:
    """``SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS] [-t TYPE]`` → source, mount point, options,
    sloppy, fake (what ``mount`` and ``mount.fuse3`` pass to a helper)."""
    positional: list[str] = []
    options: list[str] = []
    sloppy = fake = False
    words = iter(argv)
    for word in words:
        if word == "-o":
            options.append(next(words, ""))
        elif word.startswith("-o"):
            options.append(word[2:])
        elif word == "-t":
            next(words, None)  # the type (fuse.remotefs): known already
        elif word.startswith("-") and len(word) > 1:
            flags = set(word[1:])
            if flags - set("sfnvi"):
                raise FstabError(f"unknown flag {word}")
            sloppy, fake = sloppy or "s" in flags, fake or "f" in flags
        else:
            positional.append(word)
    if len(positional) != 2:
        raise FstabError("usage: mount.remotefs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]")
    return positional[0], positional[1], ",".join(options), sloppy, fake


def run_helper(argv: list[str], mount: Callable[[list[str]], int], prog: str) -> int:
    """Mount as ``mount`` asked (through ``mount``, ``remotefs.cli.main`` for ``mount …``)."""
    try:
        source, mountpoint, options, sloppy, fake = parse_helper_argv(argv)
        args = mount_arguments(source, mountpoint, options, sloppy=sloppy)
    except FstabError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if fake:
        return 0
    return 0 if mount(["mount", *args]) == 0 else EXIT_MOUNT_FAILED


def main() -> int:
    """``mount.remotefs``."""
    from remotefs.cli import main as remotefs_main

    return run_helper(sys.argv[1:], remotefs_main, "mount.remotefs")
