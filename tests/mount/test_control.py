"""Issue 16: warm, pin, check and evict with progress; cache status per file; live status
and Prometheus metrics. Real mounts of the demo dataset, each with its own emulator."""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.mount.conftest import emulated, platform_mount
from tests.support.emulator import Emulator
from tests.support.expect import mount_files
from tests.support.fuse import Mount

BIG = "big/random-1GiB.bin"
REMOTEFS = [sys.executable, "-m", "remotefs"]


def remotefs(*args: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REMOTEFS, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def cache_state(path: Path) -> str:
    return os.getxattr(path, "user.remotefs.cache").decode()


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def storage_requests(emu: Emulator) -> int:
    requests = emu.stats()["requests"]
    return int(requests.get("sb.storage", 0) + requests.get("odm.download", 0))


def test_warm_in_a_terminal_then_every_byte_is_cached(demo_tree: Path, tmp_path: Path) -> None:
    with emulated(demo_tree, tmp_path, "--latency-ms", "40") as emu:  # noqa: SIM117
        with platform_mount("sevenbridges", emu, tmp_path) as m:
            folder = m.path / "vcf"
            assert all(cache_state(f) == "none" for f in files_in(folder))
            # A real terminal: script(1) gives the command a pty, so the bar is drawn.
            done = subprocess.run(
                ["script", "-qfec", " ".join([*REMOTEFS, "warm", "-r", str(folder)]), "/dev/null"],
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout[-2000:]
            files = files_in(folder)
            assert f"{len(files)}/{len(files)} files" in done.stdout  # the bar's description
            assert "B/s" in done.stdout and "100%" in done.stdout  # rate and progress
            assert all(cache_state(f) == "full" for f in files)
            assert cache_state(folder).startswith(f"full ({len(files)} of {len(files)} files full")
            emu.reset()
            expected = mount_files(demo_tree, "sevenbridges")
            for f in files:
                assert f.read_bytes() == expected[str(f.relative_to(m.path))].read()
            assert storage_requests(emu) == 0  # every byte came from the cache


def test_pins_survive_a_full_cache_and_a_remount_and_evict_empties(
    demo_tree: Path, tmp_path: Path
) -> None:
    expected = mount_files(demo_tree, "sevenbridges")
    with emulated(demo_tree, tmp_path) as emu:
        cache = tmp_path / "cache"
        with platform_mount("sevenbridges", emu, tmp_path, "--cache-size", "64M", cache=cache) as m:
            done = remotefs("warm", "-r", "--pin", "--quiet", m.path / "bam")
            assert done.returncode == 0, done.stderr
            pinned = files_in(m.path / "bam")
            assert all(cache_state(f) == "full pinned" for f in pinned)
            with open(m.path / BIG, "rb") as f:  # fill the rest of the cache, three times over
                for _ in range(200):
                    f.read(1 << 20)
            check = remotefs("warm", "-r", "--check", m.path / "bam")
            assert check.stdout.count("full pinned") == len(pinned), check.stdout
        with platform_mount("sevenbridges", emu, tmp_path, "--cache-size", "64M", cache=cache) as m:
            emu.reset()
            for f in pinned:  # from the disk tier, after a remount
                assert f.read_bytes() == expected[str(f.relative_to(m.path))].read()
            assert storage_requests(emu) == 0
            done = remotefs("warm", "-r", "--evict", m.path / "bam")
            assert done.returncode == 0, done.stderr
            assert all(cache_state(f) == "none" for f in pinned)
            assert "0 pinned" in cache_state(m.path / "bam")
            emu.reset()
            pinned[0].read_bytes()
            assert storage_requests(emu) > 0  # gone from the cache indeed


def test_pins_beyond_half_the_cache_are_refused_before_anything(
    demo_tree: Path, tmp_path: Path
) -> None:
    with emulated(demo_tree, tmp_path) as emu:  # noqa: SIM117
        with platform_mount("sevenbridges", emu, tmp_path, "--cache-size", "64M") as m:
            emu.reset()
            done = remotefs("warm", "--pin", m.path / BIG)
            assert done.returncode == 2
            assert "more than the 32.0 MiB allowed" in done.stderr and done.stderr.count("\n") == 1
            assert storage_requests(emu) == 0 and cache_state(m.path / BIG) == "none"


def test_ctrl_c_stops_a_warm_and_leaves_the_mount_healthy(demo_tree: Path, tmp_path: Path) -> None:
    expected = mount_files(demo_tree, "sevenbridges")
    # 250 ms per request: the 1 GiB warm takes seconds (256 pieces, 12 at once); Ctrl-C as
    # soon as the emulator has served its first piece. The warm gets SIGINT's default
    # action back: under a runner that ignores it (a background job), Python would ignore
    # it too, and the warm would run to its end.
    with emulated(demo_tree, tmp_path, "--latency-ms", "250") as emu:  # noqa: SIM117
        with platform_mount("sevenbridges", emu, tmp_path) as m:
            big = m.path / BIG
            warm = subprocess.Popen(
                [*REMOTEFS, "warm", str(big)],
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
            try:
                deadline = time.monotonic() + 60
                while storage_requests(emu) == 0:  # its first piece has been served
                    assert time.monotonic() < deadline and warm.poll() is None
                    time.sleep(0.05)
                warm.send_signal(signal.SIGINT)
                _, err = warm.communicate(timeout=30)
                assert warm.returncode == 130 and "what was fetched stays" in err, err
            finally:
                if warm.poll() is None:
                    warm.kill()
                    warm.communicate()
            deadline = time.monotonic() + 30  # the pieces served by then land in the cache
            while not (state := cache_state(big)).startswith("partial"):
                assert time.monotonic() < deadline, state
                time.sleep(0.05)
            # stopped, and what it fetched stays
            time.sleep(1)  # the scenario: nothing more arrives once the warm has stopped
            assert cache_state(big) == state
            assert m.proc.poll() is None
            with big.open("rb") as f:
                assert f.read(1 << 20) == expected[BIG].read(0, 1 << 20)


def status_json(*args: object) -> dict[str, Any]:
    done = remotefs("status", "--json", *args)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_status_and_prometheus_agree_with_the_emulator(demo_tree: Path, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    with emulated(demo_tree, tmp_path) as emu:  # noqa: SIM117
        with platform_mount(
            "sevenbridges", emu, tmp_path, "--metrics-addr", f"127.0.0.1:{port}"
        ) as m:
            before = status_json(m.path)
            emu.reset()
            served = sum(len(f.read_bytes()) for f in files_in(m.path / "vcf"))
            deadline = time.monotonic() + 30
            while (after := status_json(m.path))["in_flight"]["fetches"]:  # prefetches land
                assert time.monotonic() < deadline
                time.sleep(0.05)
            stats = emu.stats()
            scrape = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
            families = {f.name: f for f in text_string_to_metric_families(scrape.read().decode())}

    def delta(kind: str, field: str) -> int:
        now = after["requests"].get(kind, {}).get(field, 0)
        return int(now - before["requests"].get(kind, {}).get(field, 0))

    routes = stats["requests"]
    assert delta("listing", "requests") == routes.get("sb.files.list", 0)
    assert delta("signed-url", "requests") == routes.get("sb.download_info", 0)
    assert delta("storage", "requests") == routes["sb.storage"]
    assert delta("storage", "bytes") == stats["bytes"]["sb.storage"]
    assert after["bytes_fetched"] - before["bytes_fetched"] == stats["bytes"]["sb.storage"]
    assert after["bytes_served"] - before["bytes_served"] == served
    assert after["platform"] == "sevenbridges" and after["mountpoint"] == str(m.path)
    assert after["rate_limit"]["limit"] == 1000 and after["rate_limit"]["remaining"] <= 1000
    assert after["disk_cache"]["limit_bytes"] == 10 << 30
    assert after["memory"]["rss_bytes"] > 0
    storage = {
        s.labels["kind"]: s.value
        for s in families["remotefs_requests"].samples
        if s.name == "remotefs_requests_total"
    }
    assert storage["storage"] == after["requests"]["storage"]["requests"]
    assert "remotefs_bytes_served" in families and "remotefs_rate_limit_remaining" in families


def test_bad_input_is_one_line(tmp_path: Path, mounted: Mount) -> None:
    outside = remotefs("warm", tmp_path)
    assert outside.returncode == 2 and "is not inside a remotefs mount" in outside.stderr
    assert outside.stderr.count("\n") == 1
    folder = next(p for p in mounted.path.iterdir() if p.is_dir())
    not_recursive = remotefs("warm", folder)
    assert not_recursive.returncode == 2 and "add --recursive" in not_recursive.stderr
    unknown = remotefs("warm", "--frobnicate", mounted.path)
    assert unknown.returncode == 2 and "unrecognized arguments: --frobnicate" in unknown.stderr
    assert unknown.stderr.count("\n") == 1
    status = remotefs("status", tmp_path)
    assert status.returncode == 2 and "is not inside a remotefs mount" in status.stderr
    both = remotefs("warm", "--check", "--evict", mounted.path)
    assert both.returncode == 2 and both.stderr.count("\n") == 1
    with pytest.raises(OSError) as info:
        os.getxattr(folder, "user.remotefs.control")  # only the root names the socket
    assert info.value.errno == errno.ENODATA


def test_status_counts_the_errors_the_mount_answered(demo_tree: Path, tmp_path: Path) -> None:
    with emulated(demo_tree, tmp_path) as emu, platform_mount("sevenbridges", emu, tmp_path) as m:
        target = m.path / "bam" / "ex1.bam"
        with pytest.raises(FileNotFoundError):  # a name that is not there: no failure
            os.stat(m.path / "bam" / "ex1.bam.csi")
        before = status_json(m.path)
        assert (before["errors_answered"], before["last_error"]) == (0, None)
        emu.configure(revoked=[os.getxattr(target, "user.remotefs.id").decode()])
        with pytest.raises(PermissionError):
            target.read_bytes()
        after = status_json(m.path)
        assert after["errors_answered"] >= 1
        message = after["last_error"]["message"]
        assert message.startswith("read: ") and "ex1.bam" in message, message
        assert message.endswith("access denied) (EACCES)"), message
        assert remotefs("status", m.path).stdout.count(f"last error   {message}") == 1


def control_socket_of(mount: Mount) -> bytes:
    return os.getxattr(mount.path, "user.remotefs.control")


def hung_up(sock: socket.socket, timeout: float = 30) -> None:
    """Wait until the mount has closed its end of ``sock`` (which has shut its own reading
    end): EPOLLHUP, reported whatever the mask."""
    with select.epoll() as poll:
        poll.register(sock.fileno(), 0)
        assert poll.poll(timeout), "the mount did not close the connection"


def test_the_control_socket_survives_any_client(demo_tree: Path, tmp_path: Path) -> None:
    """Nothing a client sends or does ends the mount: malformed requests are answered,
    clients that hang up (at once, or mid-stream of a warm's progress) end their own
    request only. And pins are counted in the cache's 1 MiB slots, not in bytes."""
    with emulated(demo_tree, tmp_path, "--latency-ms", "20") as emu:
        with platform_mount("sevenbridges", emu, tmp_path, "--cache-size", "64M") as m:
            path = control_socket_of(m)
            big = os.stat(m.path / BIG).st_ino
            for payload in [
                b'{"op": "warm", "inodes": [1e400]}\n',
                b'{"op": "check", "inodes": [2], "jobs": 1e400}\n',
                b'{"op": "check", "inodes": [2.5]}\n',
                b"[" * 100_000 + b"\n",
                b"\xff\n",
            ]:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.connect(path)
                    sock.sendall(payload)
                    answer = json.loads(sock.makefile("rb").readline())
                assert answer["event"] == "error", payload[:40]
                assert answer["message"].startswith("bad request: "), answer
            warm = json.dumps({"op": "warm", "inodes": [big], "jobs": 12}).encode() + b"\n"
            for _ in range(5):  # a request, then gone at once
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.connect(path)
                    sock.sendall(warm)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(path)
                sock.sendall(warm)
                events = sock.makefile("rb")
                while json.loads(events.readline())["event"] != "progress":
                    pass
                # It reads no more: the mount's next send fails (EPIPE) mid-warm.
                sock.shutdown(socket.SHUT_RD)
                hung_up(sock)
            assert status_json(m.path)["pid"] == m.pid and m.proc.poll() is None
            emu.reset()
            many = m.path / "many"
            done = remotefs("warm", "-r", "--pin", "--quiet", many)
            assert done.returncode == 2, done.stderr
            assert "more than the 32.0 MiB allowed" in done.stderr, done.stderr
            assert storage_requests(emu) == 0
            assert cache_state(many).endswith(", 0 pinned)"), cache_state(many)
        log = (tmp_path / "m.log").read_text()
        assert "Traceback" not in log and "failed unexpectedly" not in log


def test_evict_drops_the_kernels_cached_pages(demo_tree: Path, tmp_path: Path) -> None:
    expected = mount_files(demo_tree, "sevenbridges")["bam/ex1.bam"].read()
    with emulated(demo_tree, tmp_path) as emu, platform_mount("sevenbridges", emu, tmp_path) as m:
        target = m.path / "bam" / "ex1.bam"
        assert target.read_bytes() == expected
        reads = status_json(m.path)["reads"]
        assert target.read_bytes() == expected
        assert status_json(m.path)["reads"] == reads  # the kernel's page cache answered
        done = remotefs("warm", "--evict", target)
        assert done.returncode == 0, done.stderr
        assert cache_state(target) == "none"
        emu.reset()
        assert target.read_bytes() == expected
        assert status_json(m.path)["reads"] > reads  # asked of the mount again...
        assert emu.requests("sb.storage") == 1  # ...and fetched again, the whole small file


def test_a_control_directory_of_another_user_costs_the_socket_not_the_mount(
    demo_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a directory of another user takes root")
    expected = mount_files(demo_tree, "sevenbridges")["bam/ex1.bam"].read()
    runtime = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    try:
        (runtime / "remotefs").mkdir(mode=0o700)
        os.chown(runtime / "remotefs", 65534, 65534)  # made first by someone else
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        cache = tmp_path / ("c" * 100)  # too long a path for a socket there
        with emulated(demo_tree, tmp_path) as emu:  # noqa: SIM117
            with platform_mount("sevenbridges", emu, tmp_path, cache=cache) as m:
                assert (m.path / "bam" / "ex1.bam").read_bytes() == expected
                with pytest.raises(OSError) as info:
                    control_socket_of(m)
                assert info.value.errno == errno.ENODATA
                status = remotefs("status", m.path)
                assert status.returncode == 2 and "has no control socket" in status.stderr
        assert os.listdir(runtime / "remotefs") == []
        log = (tmp_path / "m.log").read_text()
        assert log.count("WARNING") == 1 and "belongs to uid 65534" in log, log
        assert "Traceback" not in log
    finally:
        shutil.rmtree(runtime)
