"""The ``remotefs`` command line: parses arguments into calls, turns user errors into one line.

Sub-commands: ``emulator`` (the platform emulator alone), ``demo`` (the emulator with the
demo dataset, printing what to try). A user error (a missing data
directory, a malformed sidecar) prints ``remotefs: error: …`` and exits 2, with no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from remotefs import __version__

TOKENS_ENV = "REMOTEFS_EMULATOR_TOKENS"
DEFAULT_EMULATOR_TOKEN = "demo-token"


class UsageError(Exception):
    """A mistake the user can fix; printed as one line."""


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "remotefs"


def _emulator_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    p.add_argument("--rate-limit", type=int, default=1000, help="SB requests per window")
    p.add_argument("--rate-window", type=float, default=300.0, help="SB window, seconds")
    p.add_argument("--odm-rate-limit", type=int, default=0, help="ODM requests per window (0: off)")
    p.add_argument("--odm-rate-window", type=float, default=60.0)
    p.add_argument("--url-lifetime", type=float, default=3600.0, help="signed URL lifetime, s")
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


def _run_emulator(args: argparse.Namespace) -> int:
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
        sb_rate_limit=args.rate_limit,
        sb_rate_window=args.rate_window,
        odm_rate_limit=args.odm_rate_limit,
        odm_rate_window=args.odm_rate_window,
        url_lifetime=args.url_lifetime,
    )
    try:
        serve(create_app(dataset, _tokens(args), knobs), args.host, args.port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    return 0


def _demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the emulator with the demo dataset; print what to try")
    p.add_argument("--cache-dir", type=Path, help="where the demo dataset is built")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from remotefs.demo import run_demo

    try:
        return run_demo(args.cache_dir)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remotefs", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"remotefs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _emulator_parser(sub)
    _demo_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"remotefs: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
