"""A small, deterministic ``--data`` tree for emulator and mount tests.

Bytes come from seeded generators, so the tests can compare against the source files
byte for byte. The tree covers paging (a 250-entry folder), nesting, an empty file, a
generated file, sidecar metadata and awkward names.
"""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path

MANY = 250
AWKWARD_NAMES = (
    "name with spaces.txt",
    "ünïcødé-名前.txt",
    "-leading-dash.txt",
    "x" * 196 + ".txt",
)


def write_tree(root: Path) -> Path:
    rng = random.Random(20261122)
    (root / "reads").mkdir(parents=True)
    (root / "reads" / "sample.bin").write_bytes(rng.randbytes(6 * 1024 * 1024 + 12345))
    (root / "reads" / "sample.bin.meta.json").write_text(
        json.dumps(
            {
                "sample_id": "S1",
                "tags": ["reads", "demo"],
                "Data Class": "Bulk transcriptomics",
                "experimental_strategy": "WGS",
            }
        )
    )
    (root / "reads" / "small.txt").write_text("hello remotefs\n")
    (root / "reads" / "small.txt.meta.json").write_text(
        json.dumps(
            {
                "sample_id": "S2",
                "tags": ["text"],
                "Data Class": "Document",
                "read_count": 42,
            }
        )
    )
    with zipfile.ZipFile(root / "reads" / "archive.zip", "w") as zf:
        zf.writestr("docs/a.txt", "a")
        zf.writestr("b.txt", "b")
    _write_hdf5(root / "reads" / "tiny.h5")
    many = root / "many"
    many.mkdir()
    for i in range(MANY):
        (many / f"file-{i:04d}.txt").write_text(f"file {i}\n" * (i % 7 + 1))
    (root / "nested" / "a" / "b").mkdir(parents=True)
    (root / "nested" / "a" / "b" / "deep.txt").write_text("deep\n")
    (root / "nested" / "empty.txt").write_bytes(b"")
    (root / "big").mkdir()
    (root / "big" / "gen.bin.generated").write_text(json.dumps({"size": 3_000_001, "seed": 5}))
    (root / "awkward").mkdir()
    for name in AWKWARD_NAMES:
        (root / "awkward" / name).write_text(f"awkward {name}\n")
    (root / "top.txt").write_text("top level\n")
    return root


def _write_hdf5(path: Path) -> None:
    import h5py  # a test dependency

    with h5py.File(path, "w") as f:
        f.create_group("obs").create_dataset("cells", data=list(range(10)))
        f.create_dataset("X", data=[[1.0, 2.0], [3.0, 4.0]])
