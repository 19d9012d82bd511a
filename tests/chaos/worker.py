"""One chaos worker: a reader of the mounts, in a process of its own (run as a script).

``python worker.py SPEC.json`` reads the spec (seed, mounts, the files each shows and their
sources, the folders and their names, the time to stop, the allowed wait) and, until the
stop time, does random operations on random mounts: list a folder, stat a file, read a file
sequentially from a random offset, read random pieces, read across the end of file, get an
extended attribute. Every system call is timed and checked on its own:

- a call returns exactly what the source holds (names, sizes, bytes; a read across EOF
  exactly up to EOF), or fails with EIO, EACCES or ENOENT. One exception, the kernel's: a
  read of several pages whose later page fails returns the pages before it (a short read
  ending on a page boundary, as on any page-cached filesystem), and the next read, from
  there, gets the rest or the error. The worker reads on as a correct program does, and
  checks exactly that (counted as ``short-then-read``);
- no call takes longer than ``max_call_seconds``.

It prints one JSON line: calls by operation, errors by errno name, and the first violations.
The bound is per FUSE operation, so each call is made to be one: folders are opened one
component at a time, relative to their parent's descriptor, and files through their
folder's (``/proc/self/fd/N/name``), never by walking a whole path; a read asks for at most
``READ_PIECE`` (a larger one is several FUSE reads in series, each with its own deadline).
"""

from __future__ import annotations

import errno
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ALLOWED = {errno.EIO, errno.EACCES, errno.ENOENT}
PAGE = 4096
READ_PIECE = 128 << 10


class Source:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.size: int = spec["size"]
        self.path = Path(spec["path"])
        self.generated = None
        if spec.get("seed") is not None:
            from remotefs.emulator.content import GeneratedContent

            self.generated = GeneratedContent(spec["size"], spec["seed"])

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        if self.generated is not None:
            return self.generated.read(offset, length)
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(length)


class Worker:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.rng = random.Random(spec["seed"])
        self.stop_at: float = spec["stop_at"]
        self.max_call = spec["max_call_seconds"]
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.violations: list[str] = []
        self.mounts = []
        for mount in spec["mounts"]:
            root = Path(mount["path"])
            files = {rel: Source(src) for rel, src in mount["files"].items()}
            folders = {rel: set(names) for rel, names in mount["folders"].items()}
            self.mounts.append((root, files, folders))
        self.dir_fds: dict[Path, int] = {}

    # --- one timed call ---------------------------------------------------------------------

    def call(self, op: str, what: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` timed; ``None`` if it failed with an allowed errno (counted)."""
        self.calls[op] += 1
        started = time.monotonic()
        try:
            return fn()
        except OSError as exc:
            name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            self.errors[name] += 1
            if exc.errno not in ALLOWED:
                self.violate(f"{op} {what}: errno {name} ({exc})")
            return None
        finally:
            took = time.monotonic() - started
            if took > self.max_call:
                at = time.strftime("%H:%M:%S", time.localtime(time.time() - took))
                self.violate(f"{op} {what}: took {took:.2f} s (> {self.max_call:.1f} s), from {at}")

    def violate(self, text: str) -> None:
        if len(self.violations) < 50:
            self.violations.append(text)

    def dir_fd(self, folder: Path, root: Path) -> int | None:
        """A descriptor of ``folder`` (under ``root``), each component opened relative to
        its parent's: one lookup per call."""
        fd = self.dir_fds.get(folder)
        if fd is not None:
            return fd
        if folder == root:
            fd = self.call(
                "open-dir", str(root), lambda: os.open(root, os.O_RDONLY | os.O_DIRECTORY)
            )
        else:
            parent = self.dir_fd(folder.parent, root)
            if parent is None:
                return None
            fd = self.call(
                "open-dir",
                str(folder),
                lambda: os.open(folder.name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=parent),
            )
        if fd is not None:
            self.dir_fds[folder] = fd
        return fd

    def via(self, rel: str, root: Path) -> str | None:
        """``/proc/self/fd/N/name`` for ``rel`` under ``root`` (its folder opened once)."""
        parent, _, name = rel.rpartition("/")
        fd = self.dir_fd(root / parent if parent else root, root)
        return None if fd is None else f"/proc/self/fd/{fd}/{name}"

    # --- operations -----------------------------------------------------------------------

    def list_folder(self, root: Path, folders: dict[str, set[str]]) -> None:
        rel = self.rng.choice(sorted(folders))
        fd = self.dir_fd(root / rel if rel else root, root)
        if fd is None:
            return
        names = self.call("list", rel or "/", lambda: os.listdir(f"/proc/self/fd/{fd}"))
        if names is not None and set(names) != folders[rel]:
            missing, extra = folders[rel] - set(names), set(names) - folders[rel]
            self.violate(f"list {rel}: missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}")

    def stat_file(self, root: Path, rel: str, source: Source) -> None:
        path = self.via(rel, root)
        if path is None:
            return
        st = self.call("stat", rel, lambda: os.stat(path))
        if st is not None and st.st_size != source.size:
            self.violate(f"stat {rel}: size {st.st_size}, expected {source.size}")

    def read_file(self, root: Path, rel: str, source: Source, how: str) -> None:
        path = self.via(rel, root)
        if path is None:
            return
        fd = self.call("open", rel, lambda: os.open(path, os.O_RDONLY))
        if fd is None:
            return
        try:
            if how == "sequential":
                offset = self.rng.randrange(max(1, source.size))
                for _ in range(self.rng.randint(1, 24)):
                    if not self.check_read(fd, rel, source, offset, READ_PIECE):
                        break
                    offset += READ_PIECE
                    if offset >= source.size:
                        break
            elif how == "random":
                for _ in range(self.rng.randint(1, 8)):
                    offset = self.rng.randrange(max(1, source.size))
                    if not self.check_read(fd, rel, source, offset, self.rng.randint(1, 64 << 10)):
                        break
            else:  # across EOF
                back = self.rng.randint(1, min(source.size, READ_PIECE // 2) or 1)
                self.check_read(fd, rel, source, max(0, source.size - back), 2 * back)
            if self.rng.random() < 0.3:
                value = self.call(
                    "xattr", rel, lambda: os.getxattr(f"/proc/self/fd/{fd}", "user.remotefs.id")
                )
                if value is not None and not value:
                    self.violate(f"xattr {rel}: empty user.remotefs.id")
        finally:
            os.close(fd)

    def check_read(self, fd: int, rel: str, source: Source, offset: int, length: int) -> bool:
        length = min(length, READ_PIECE)
        got = self.call("read", rel, lambda: os.pread(fd, length, offset))
        if got is None:
            return False
        want = source.read(offset, length)
        if got == want:
            return True
        end = offset + len(got)
        if 0 < len(got) < len(want) and want.startswith(got) and end % PAGE == 0:
            # The kernel's partial read: the pages before a failing one. Read on from there.
            self.calls["short-then-read"] += 1
            return self.check_read(fd, rel, source, end, length - len(got))
        self.violate(
            f"read {rel} [{offset}, +{length}): {len(got)} bytes, expected {len(want)}"
            f"{' (same length, other bytes)' if len(got) == len(want) else ''}"
            f"{' (a prefix, not on a page boundary)' if want.startswith(got) else ''}"
        )
        return False

    def run(self) -> dict[str, Any]:
        while time.monotonic() < self.stop_at:
            root, files, folders = self.rng.choice(self.mounts)
            op = self.rng.choices(
                ["list", "stat", "sequential", "random", "eof"], weights=[2, 2, 3, 3, 1]
            )[0]
            if op == "list":
                self.list_folder(root, folders)
                continue
            names = sorted(files)
            # Large files get most reads: they cannot all stay cached, so faults reach them.
            rel = self.rng.choices(names, [1 + files[n].size // (1 << 20) for n in names])[0]
            if op == "stat":
                self.stat_file(root, rel, files[rel])
            else:
                self.read_file(root, rel, files[rel], op)
        for fd in self.dir_fds.values():
            os.close(fd)
        return {
            "calls": dict(self.calls),
            "errors": dict(self.errors),
            "violations": self.violations,
        }


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(Worker(spec).run()), flush=True)
