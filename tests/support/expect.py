"""What a mount of the demo tree must show: mount path → the source of its bytes.

SB (``--project``) mirrors the tree. ODM shows every file flat under ``all/`` (and under its
top-level directory's study). Generated files (``NAME.generated``) are recomputed here with
:class:`~remotefs.emulator.content.GeneratedContent`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from remotefs.emulator.content import GeneratedContent
from remotefs.emulator.dataset import GENERATED_SUFFIX, PRIVATE_PREFIX, SIDECAR_SUFFIX


@dataclass(frozen=True)
class Source:
    path: Path
    generated: GeneratedContent | None = None

    @property
    def size(self) -> int:
        return self.generated.size if self.generated else self.path.stat().st_size

    def read(self, offset: int = 0, length: int | None = None) -> bytes:
        length = self.size - offset if length is None else length
        if self.generated:
            return self.generated.read(offset, length)
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def md5(self) -> str:
        h = hashlib.md5()
        if self.generated:
            for chunk in self.generated.iter_range(0, self.size):
                h.update(chunk)
        else:
            with open(self.path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        return h.hexdigest()


def tree_files(root: Path) -> dict[str, Source]:
    """Relative path (as the SB mount shows it) → source, for every served file."""
    out: dict[str, Source] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or any(p.startswith(PRIVATE_PREFIX) for p in rel.split("/")):
            continue
        if path.name.endswith(SIDECAR_SUFFIX):
            target = path.name[: -len(SIDECAR_SUFFIX)]
            if (path.parent / target).exists() or (
                path.parent / (target + GENERATED_SUFFIX)
            ).exists():
                continue
        if path.name.endswith(GENERATED_SUFFIX):
            spec = json.loads(path.read_text())
            rel = rel[: -len(GENERATED_SUFFIX)]
            out[rel] = Source(path, GeneratedContent(spec["size"], spec.get("seed", 0)))
        else:
            out[rel] = Source(path)
    return out


def mount_files(root: Path, platform: str) -> dict[str, Source]:
    """Mount-relative path → source, for the platform's namespace."""
    files = tree_files(root)
    if platform == "sevenbridges":
        return files
    return {f"all/{rel.rsplit('/', 1)[-1]}": src for rel, src in files.items()}
