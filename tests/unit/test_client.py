"""The command-line side of the control channel against a scripted server: an answer that
ends before its last event is a failure, never a quiet success."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from remotefs.client import ClientError, Target, _warm, ask, describe
from remotefs.fs.operations import cache_state


@contextmanager
def scripted(path: Path, answer: bytes) -> Iterator[list[bytes]]:
    """A control socket at ``path`` that reads one request, sends ``answer`` and hangs up
    (as a mount that dies mid-answer does); the requests it got."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    requests: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            requests.append(lines.readline())
            conn.sendall(answer)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield requests
    finally:
        thread.join(timeout=10)
        listener.close()


def lines(*events: dict[str, object]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


START = {"event": "start", "files": 1, "bytes": 10}
PROGRESS = {"event": "progress", "inode": 7, "bytes": 4}


@pytest.mark.parametrize(
    "answer",
    [
        lines(START, PROGRESS),  # the mount died mid-warm
        lines(START, PROGRESS) + b'{"event": "fi',  # ...in the middle of a line
        b"",  # ...before answering at all
    ],
)
def test_a_warm_cut_short_is_a_failure(tmp_path: Path, answer: bytes) -> None:
    target = Target(tmp_path, {7: (tmp_path / "f", 10)})
    request = {"op": "warm", "inodes": [7], "pin": False, "jobs": 12}
    with scripted(tmp_path / "s", answer), pytest.raises(ClientError) as info:
        _warm(tmp_path / "s", request, target, quiet=True, out=io.StringIO())
    assert str(info.value) == (
        "the mount stopped answering before the warm was done (did it stop? see its log)"
    )


def test_a_whole_answer_ends_at_its_last_event(tmp_path: Path) -> None:
    done = lines(START, PROGRESS, {"event": "file", "inode": 7, "ok": True}, {"event": "done"})
    target = Target(tmp_path, {7: (tmp_path / "f", 10)})
    out = io.StringIO()
    with scripted(tmp_path / "s", done) as requests:
        failed = _warm(tmp_path / "s", {"op": "warm", "inodes": [7]}, target, False, out)
    assert failed == 0 and out.getvalue() == f"{tmp_path / 'f'}: cached\n"
    assert json.loads(requests[0]) == {"op": "warm", "inodes": [7]}
    with scripted(tmp_path / "t", lines({"event": "status", "pid": 1})):
        assert list(ask(tmp_path / "t", {"op": "status"}, last="status")) == [
            {"event": "status", "pid": 1}
        ]


def test_a_zero_byte_file_is_full() -> None:
    """Decided: nothing is left to fetch of it (``cache_state``'s comment says why)."""
    assert cache_state(0, 0) == describe(0, 0, False) == "full"
    assert cache_state(10, 0) == "none" and cache_state(10, 5) == "partial 50%"
