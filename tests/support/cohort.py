"""A cohort, as a cluster's nodes read it: ten samples' BAMs in folders of their own, five
small notes, a spare file nobody reads, and the workload every node runs on it (issue 18's):
``ls -lR`` of the project, a samtools region on each BAM, ``md5sum`` of the notes.

:func:`write_cohort` lays the tree out for the emulator (copies of one small BAM under ten
names: the API sees ten files); :func:`run_cohort` runs the workload on a mount, or on the
local tree, and returns what it printed in a form that must be equal for both (the
listing's names and sizes, each region's records, each note's digest).
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SAMPLES = 10
NOTES = 5
REGION = "seq1:100-900"
SPARE = "spare/unread.txt"
"""Listed by the workload, never read by it: a file still cold on every node afterwards."""
TOOL_TIMEOUT = 120.0


def sample_bam(sample: int) -> str:
    return f"samples/s{sample:02d}/s{sample:02d}.bam"


def note(number: int) -> str:
    return f"notes/note{number}.txt"


def write_cohort(root: Path, bam: Path) -> Path:
    """The cohort under ``root`` (made), from ``bam`` and its ``.bai``."""
    for sample in range(1, SAMPLES + 1):
        target = root / sample_bam(sample)
        target.parent.mkdir(parents=True)
        shutil.copyfile(bam, target)
        shutil.copyfile(f"{bam}.bai", f"{target}.bai")
    for number in range(1, NOTES + 1):
        path = root / note(number)
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = random.Random(number)
        path.write_bytes(bytes(rng.getrandbits(8) for _ in range(4096 * number)))
    (root / SPARE).parent.mkdir()
    (root / SPARE).write_bytes(b"read by nobody, until a test does\n" * 100)
    return root


@dataclass(frozen=True)
class CohortResult:
    listing: tuple[str, ...]
    """``ls -lR``'s names and sizes, one ``folder/name size`` per file or folder."""
    regions: tuple[str, ...]
    digests: tuple[str, ...]


def run_cohort(root: Path, *, samtools: str = "samtools") -> CohortResult:
    """The workload on ``root``; raises if a tool fails (its stderr in the message)."""
    listing = _run(["ls", "-lR", "--time-style=+", str(root)])
    regions = tuple(
        _run([samtools, "view", str(root / sample_bam(s)), REGION]) for s in range(1, SAMPLES + 1)
    )
    digests = _run(["md5sum", *(note(n) for n in range(1, NOTES + 1))], cwd=root)
    return CohortResult(_names_and_sizes(listing, root), regions, tuple(digests.splitlines()))


def expected_digests(root: Path) -> tuple[str, ...]:
    return tuple(
        f"{hashlib.md5((root / note(n)).read_bytes()).hexdigest()}  {note(n)}"
        for n in range(1, NOTES + 1)
    )


def _run(argv: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, timeout=TOOL_TIMEOUT, cwd=cwd)
    if done.returncode != 0:
        raise AssertionError(f"{argv[0]} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return done.stdout.decode()


def _names_and_sizes(listing: str, root: Path) -> tuple[str, ...]:
    """``ls -lR`` output → ``folder/name size`` lines (folders' sizes left out: a mount's
    and a local disk's differ), independent of where ``root`` is."""
    out, folder = [], ""
    for line in listing.splitlines():
        if line.endswith(":") and not line.startswith(("-", "d", "l")):
            folder = line[:-1].removeprefix(str(root)).lstrip("/")
            continue
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not line.startswith(("-", "d")):
            continue
        size, name = fields[4], re.sub(r"^\s*", "", fields[5])
        out.append(f"{folder}/{name} {size if line.startswith('-') else 'dir'}")
    return tuple(sorted(out))
