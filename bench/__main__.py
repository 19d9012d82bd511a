"""``python -m bench`` (from the repository root; ``scripts/bench`` runs it with .venv)."""

from __future__ import annotations

import sys

try:
    from bench.cli import main
except ImportError as exc:  # remotefs, httpx or the tests' helpers are not importable
    print(
        f"bench: error: cannot import what the bench needs with {sys.executable} ({exc}); "
        "create .venv at the repository root (scripts/setup) and run from there",
        file=sys.stderr,
    )
    raise SystemExit(1) from None

raise SystemExit(main())
