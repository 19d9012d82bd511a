"""The ``remotefs`` command line: parses arguments into calls, turns user errors into one line.

Sub-commands: ``mount`` / ``umount``, ``emulator`` (the platform emulator alone), ``demo``
(the emulator with the demo dataset, mounted, printing what to try), ``systemd-unit`` (the
unit file for this installation). A user error (a missing data directory, a malformed
sidecar) prints ``remotefs: error: …`` and exits 2, with no traceback. Called by
``mount.fuse3`` as ``remotefs SOURCE MOUNTPOINT -o OPTIONS`` (fstab type ``fuse.remotefs``),
it is the fstab helper (``remotefs.fstab``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from remotefs import __version__
from remotefs.config import (
    DEFAULT_CACHE_SIZE,
    DEFAULT_SNIFFERS,
    DEFAULT_TIMEOUT,
    DEFAULT_TTL,
    PLATFORMS,
    SNIFFER_BYTES,
    MountConfig,
    default_cache_root,
)

TOKENS_ENV = "REMOTEFS_EMULATOR_TOKENS"
DEFAULT_EMULATOR_TOKEN = "demo-token"
EXIT_USAGE = 2
EXIT_CRASHED = 70
"""``EX_SOFTWARE``: the mount stopped for a reason nobody asked for (logged at CRITICAL)."""


class UsageError(Exception):
    """A mistake the user can fix; printed as one line."""


def _emulator_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("emulator", help="serve the Seven Bridges and Genestack ODM emulator")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="serve this directory tree (see README)")
    src.add_argument("--demo", action="store_true", help="serve the built-in demo dataset")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--token", action="append", default=[], help="accepted token (repeatable)")
    p.add_argument("--token-file", type=Path, help="file with accepted tokens, one per line")
    p.add_argument("--user", default="demo-user", help="the platform user name")
    p.add_argument("--project", help="SB project id owner/name (default: USER/<dir name>)")
    p.add_argument("--cache-dir", type=Path, help="where --demo builds its data")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    p.add_argument("--fail-every", type=int, default=0, help="every Nth request answers 503")
    p.add_argument("--drop-every", type=int, default=0, help="every Nth download drops midway")
    p.add_argument("--stall-every", type=int, default=0, help="every Nth download stalls midway")
    p.add_argument("--stall-ms", type=float, default=0.0, help="how long a stall lasts")
    p.add_argument("--rate-limit", type=int, default=1000, help="SB requests per window")
    p.add_argument("--rate-window", type=float, default=300.0, help="SB window, seconds")
    p.add_argument("--odm-rate-limit", type=int, default=0, help="ODM requests per window (0: off)")
    p.add_argument("--odm-rate-window", type=float, default=60.0)
    p.add_argument("--url-lifetime", type=float, default=3600.0, help="signed URL lifetime, s")
    p.add_argument(
        "--storage-url",
        default="",
        metavar="ORIGIN",
        help="origin of signed storage URLs, http[s]://HOST:PORT (default: the request's own)",
    )
    p.set_defaults(func=_run_emulator)


def _tokens(args: argparse.Namespace) -> set[str]:
    tokens = set(args.token)
    if args.token_file:
        try:
            tokens.update(t.strip() for t in args.token_file.read_text().splitlines() if t.strip())
        except OSError as exc:
            raise UsageError(f"--token-file {args.token_file}: {exc.strerror}") from None
    tokens.update(t for t in os.environ.get(TOKENS_ENV, "").split(",") if t.strip())
    return tokens or {DEFAULT_EMULATOR_TOKEN}


def _require_emulator_stack() -> None:
    """The emulator's HTTP server is an extra (a mount does not need it): say how to get it."""
    try:
        import anyio  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"the emulator needs its server stack ({exc.name} is missing): "
            "pip install 'remotefs[emulator]'"
        ) from None


def _run_emulator(args: argparse.Namespace) -> int:
    _require_emulator_stack()
    from remotefs.emulator.app import create_app
    from remotefs.emulator.control import Knobs
    from remotefs.emulator.dataset import DatasetError, load_dataset
    from remotefs.emulator.server import serve

    if args.demo:
        from remotefs.emulator.demo import DemoBuildError, build_demo

        try:
            data = build_demo(args.cache_dir or default_cache_root())
        except DemoBuildError as exc:
            raise UsageError(str(exc)) from None
        project = args.project or f"{args.user}/demo"
    else:
        data, project = args.data, args.project
    try:
        dataset = load_dataset(data, user=args.user, project=project)
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    knobs = Knobs(
        latency_ms=args.latency_ms,
        fail_every=args.fail_every,
        drop_every=args.drop_every,
        stall_every=args.stall_every,
        stall_ms=args.stall_ms,
        sb_rate_limit=args.rate_limit,
        sb_rate_window=args.rate_window,
        odm_rate_limit=args.odm_rate_limit,
        odm_rate_window=args.odm_rate_window,
        url_lifetime=args.url_lifetime,
    )
    try:
        knobs.update({"storage_url": args.storage_url})
    except ValueError as exc:
        raise UsageError(f"--storage-url: {exc}") from None
    try:
        serve(create_app(dataset, _tokens(args), knobs), args.host, args.port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    return 0


def _demo_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("demo", help="the emulator with the demo dataset, mounted; what to try")
    p.add_argument("mountpoint", type=Path, nargs="?", default=Path("remotefs-demo"))
    p.add_argument("--cache-dir", type=Path, help="where the demo dataset and cache live")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    _require_emulator_stack()
    from remotefs.demo import DemoError, run_demo

    try:
        return run_demo(args.mountpoint, args.cache_dir)
    except DemoError as exc:
        raise UsageError(str(exc)) from None


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
DAEMON_START_TIMEOUT = 120.0


def parse_size(text: str) -> int:
    """``64M``, ``10G``, ``1024`` (bytes); binary units."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS and value[-1:] else ""
    number = value[: -len(unit)] if unit else value
    try:
        size = int(float(number) * _SIZE_UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 64M, 10G)") from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return size


def _mount_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("mount", help="mount a platform as a read-only directory tree")
    p.add_argument(
        "mountpoint", type=Path, help="an empty directory, where the platform's files appear"
    )
    p.add_argument("--platform", choices=PLATFORMS, required=True)
    p.add_argument("--api-url", help="SB: the API endpoint (…/v2); Genestack: the host root")
    p.add_argument("--project", help="SB: mount this project (owner/name) as the root")
    p.add_argument(
        "--profile", help="SB: profile of ~/.sevenbridges/credentials (default: default)"
    )
    p.add_argument(
        "--token-file",
        type=Path,
        help="a file holding the token (first line); SB: instead of the environment or a profile",
    )
    p.add_argument("--cache-dir", type=Path, help="default: $XDG_CACHE_HOME/remotefs")
    p.add_argument(
        "--cache-size",
        type=parse_size,
        default=DEFAULT_CACHE_SIZE,
        help=f"disk cache bound, e.g. 50G (default {DEFAULT_CACHE_SIZE >> 30}G)",
    )
    p.add_argument(
        "--ttl",
        type=float,
        default=DEFAULT_TTL,
        help=f"seconds listings are trusted (default {DEFAULT_TTL:g})",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds an operation may wait for the platform before EIO (default "
        f"{DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        "--sniffer",
        action="append",
        default=[],
        metavar="PROGRAM",
        help="a program (glob) whose reads are a file manager's or indexer's: exact, capped "
        "(repeatable; added to the defaults, see README)",
    )
    p.add_argument(
        "--no-default-sniffers",
        action="store_true",
        help="treat no program as a sniffer but those named with --sniffer",
    )
    p.add_argument(
        "--sniffer-bytes",
        type=parse_size,
        default=SNIFFER_BYTES,
        help=f"bytes a sniffer may fetch per file (default {SNIFFER_BYTES >> 20}M)",
    )
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="QUERY",
        help="show only matching files at the root: SB key=value (metadata.F, tag, name, "
        "origin.task; repeatable), ODM a filter expression (see README, Cohorts)",
    )
    p.add_argument("--query", metavar="TEXT", help="ODM: only files matching this full text")
    p.add_argument(
        "--metrics-addr",
        metavar="HOST:PORT",
        type=_metrics_address,
        help="serve Prometheus metrics there (no authentication: use 127.0.0.1)",
    )
    p.add_argument(
        "--shared-state",
        metavar="URL",
        help="redis://HOST[:PORT][/DB] or rediss://…: share the API budget, listings and "
        "signed URLs with every mount of the same token (see README, Many machines)",
    )
    p.add_argument(
        "--shared-state-ca", type=Path, metavar="FILE", help="CA bundle for a rediss:// store"
    )
    p.add_argument(
        "--shared-state-password-file",
        type=Path,
        metavar="FILE",
        help="the store's password (first line); else the URL's, else $REMOTEFS_REDIS_PASSWORD",
    )
    p.add_argument("--allow-other", action="store_true", help="let other users read the mount")
    p.add_argument("--foreground", action="store_true", help="stay in the foreground")
    p.add_argument("--debug", action="store_true", help="log at DEBUG level")
    p.set_defaults(func=_run_mount)

    u = sub.add_parser("umount", help="unmount a remotefs mount")
    u.add_argument("mountpoint", type=Path, help="where a remotefs mount is mounted")
    u.set_defaults(func=_run_umount)

    unit = sub.add_parser(
        "systemd-unit", help="print the systemd unit (remotefs@.service) for this installation"
    )
    unit.set_defaults(func=_run_systemd_unit)

    w = sub.add_parser(
        "warm", help="fetch files of a running mount into its cache (or --check, --evict)"
    )
    w.add_argument("paths", type=Path, nargs="+", help="files or folders inside a mount")
    w.add_argument("-r", "--recursive", action="store_true", help="take folders' files, all levels")
    action = w.add_mutually_exclusive_group()
    action.add_argument(
        "--pin", action="store_true", help="also keep them out of eviction (at most half the cache)"
    )
    action.add_argument("--check", action="store_true", help="say what is cached; fetch nothing")
    action.add_argument("--evict", action="store_true", help="drop them (and their pins)")
    w.add_argument("--jobs", type=_positive_int, default=12, help="requests at once (default 12)")
    w.add_argument("-q", "--quiet", action="store_true", help="no progress, only failures")
    w.set_defaults(func=_run_warm)

    st = sub.add_parser("status", help="what running mounts are doing")
    st.add_argument(
        "mountpoints", type=Path, nargs="*", help="mounts (or paths in them); default: all"
    )
    st.add_argument("--json", action="store_true", help="one JSON object per mount")
    st.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const=2.0,
        metavar="SECONDS",
        help="show it again every SECONDS (default 2) until Ctrl-C",
    )
    st.set_defaults(func=_run_status)


def setup_logging(debug: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request line at INFO, signed URLs included: keep it quiet.
    for noisy in ("httpx", "httpcore", "hpack", "coredis"):  # coredis: a line per retry
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _mount_config(args: argparse.Namespace) -> MountConfig:
    return MountConfig(
        mountpoint=args.mountpoint.absolute(),
        platform=args.platform,
        api_url=args.api_url,
        project=args.project,
        profile=args.profile,
        token_file=args.token_file,
        cache_dir=(args.cache_dir or default_cache_root()).absolute(),
        cache_size=args.cache_size,
        allow_other=args.allow_other,
        ttl=args.ttl,
        deadline=args.timeout,
        sniffers=(*(() if args.no_default_sniffers else DEFAULT_SNIFFERS), *args.sniffer),
        sniffer_bytes=args.sniffer_bytes,
        metrics_addr=args.metrics_addr,
        filters=tuple(args.filter),
        query=args.query,
        shared_state=args.shared_state,
        shared_state_ca=args.shared_state_ca,
        shared_state_password_file=args.shared_state_password_file,
    )


def _run_mount(args: argparse.Namespace) -> int:
    if not args.foreground:
        return _daemonize(args)
    import logging

    import trio

    from remotefs.credentials import CredentialsError
    from remotefs.mount import MountError, serve
    from remotefs.ready import READY_FD_ENV
    from remotefs.redis_url import PASSWORD_ENV, has_password

    setup_logging(args.debug)
    ready_fd = int(os.environ.pop(READY_FD_ENV, "-1"))
    if args.shared_state is not None and has_password(args.shared_state):
        logging.getLogger("remotefs").warning(
            "--shared-state: a password in the URL of a foreground mount is on its command "
            "line, which ps shows to every user; prefer --shared-state-password-file or $%s",
            PASSWORD_ENV,
        )

    def report(line: str) -> None:
        nonlocal ready_fd
        if ready_fd >= 0:
            os.write(ready_fd, f"{line}\n".encode())
            os.close(ready_fd)
            ready_fd = -1

    try:
        trio.run(serve, _mount_config(args), lambda: report("ready"))
    except (MountError, CredentialsError) as exc:
        report(f"error: {exc}")
        raise UsageError(str(exc)) from None
    except BaseException as exc:
        if _interrupted(exc):  # a SIGINT before the mount's own handler was in place
            report("error: interrupted")
            return 130
        logging.getLogger("remotefs").critical(
            "the mount of %s stopped unexpectedly: %s", args.mountpoint, exc, exc_info=exc
        )
        report(f"error: the mount stopped unexpectedly: {exc}")
        return EXIT_CRASHED
    return 0


def _interrupted(exc: BaseException) -> bool:
    """A Ctrl-C, alone or inside the exception group of a nursery it unwound."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        import trio

        return (
            exc.split(KeyboardInterrupt)[0] is not None
            and exc.split((KeyboardInterrupt, trio.Cancelled))[1] is None
        )
    return False


def _daemonize(args: argparse.Namespace) -> int:
    """Start ``mount --foreground`` detached; return once it has mounted (or failed)."""
    from remotefs.ready import NotReady, spawn_mount

    cache_dir = (args.cache_dir or default_cache_root()).absolute()
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    argv, env = _password_to_environment(args.argv, args.shared_state)
    with open(cache_dir / "mount.log", "ab") as log_file:
        try:
            proc, text = spawn_mount(
                argv,
                env=env,
                timeout=DAEMON_START_TIMEOUT,
                log=log_file,
                start_new_session=True,
            )
        except NotReady:
            raise UsageError(f"the mount did not start in {DAEMON_START_TIMEOUT:.0f} s") from None
    if text == "ready":
        return 0
    if proc.poll() is None:
        proc.wait(timeout=10)
    raise UsageError(
        text.removeprefix("error: ")
        or f"the mount process exited ({proc.returncode}); see {cache_dir / 'mount.log'}"
    )


def _password_to_environment(argv: list[str], url: str | None) -> tuple[list[str], dict[str, str]]:
    """The daemon's command line and environment: a password in ``--shared-state``'s URL
    moves to the environment (``ps`` shows a command line to every user)."""
    from remotefs.redis_url import PASSWORD_ENV, without_password

    env = dict(os.environ)
    if url is None:
        return argv, env
    try:
        bare, password = without_password(url)
    except ValueError:  # the mount says what is wrong with it
        return argv, env
    if password is None:
        return argv, env
    env[PASSWORD_ENV] = password
    # wherever it stands: alone, or after --shared-state= (or any prefix argparse accepts)
    return [arg.replace(url, bare) for arg in argv], env


def _run_umount(args: argparse.Namespace) -> int:
    """``fusermount3 -u``, for remotefs mounts only: anything else is refused, untouched."""
    import subprocess

    from remotefs.mounts import mount_at

    path = args.mountpoint.absolute()
    found = mount_at(path)
    if found is None:
        raise UsageError(f"{path} is not a mount point; nothing unmounted")
    if found.fstype != "fuse.remotefs":
        raise UsageError(f"{path} is a {found.fstype} mount, not remotefs; nothing unmounted")
    done = subprocess.run(["fusermount3", "-u", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise UsageError(done.stderr.strip() or f"cannot unmount {path}")
    return 0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, not {text!r}")
    return int(text)


def _metrics_address(text: str) -> str:
    from remotefs.prometheus import parse_address

    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _run_warm(args: argparse.Namespace) -> int:
    from remotefs.client import ClientError, warm

    try:
        return warm(
            args.paths,
            recursive=args.recursive,
            pin=args.pin,
            check=args.check,
            evict=args.evict,
            jobs=args.jobs,
            quiet=args.quiet,
        )
    except ClientError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        print("\nremotefs: warm stopped; what was fetched stays cached", file=sys.stderr)
        return 130


def _run_status(args: argparse.Namespace) -> int:
    import time

    from remotefs.client import ClientError, status

    try:
        while True:
            if args.watch:
                sys.stdout.write("\033[H\033[2J")  # clear the terminal
            status(args.mountpoints, as_json=args.json)
            if not args.watch:
                return 0
            sys.stdout.flush()
            time.sleep(args.watch)
    except ClientError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        return 0


def _run_systemd_unit(args: argparse.Namespace) -> int:
    from remotefs.systemd import unit_file

    sys.stdout.write(unit_file())
    return 0


DESCRIPTION = "Seven Bridges / CAVATICA and Genestack ODM files as a read-only directory tree."
SUBCOMMANDS = frozenset({"mount", "umount", "emulator", "demo", "systemd-unit", "warm", "status"})


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line, naming the problem (``--help`` shows the rest)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="remotefs", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"remotefs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _mount_parser(sub)
    _emulator_parser(sub)
    _demo_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] not in SUBCOMMANDS and ":" in argv[0] and not argv[0].startswith("-"):
        from remotefs.fstab import run_helper  # mount.fuse3: remotefs SOURCE MOUNTPOINT -o …

        return run_helper(argv, main, "remotefs")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "mount":
        args.argv = argv[argv.index("mount") + 1 :]  # what a daemon runs again, in the foreground
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"remotefs: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
