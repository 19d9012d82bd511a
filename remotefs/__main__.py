"""`python -m remotefs` runs the command line."""

from remotefs.cli import main

raise SystemExit(main())
