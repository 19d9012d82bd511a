"""Issue 15: a real file manager (pcmanfm, on a real X server, Xvfb) browsing a mount costs
what its user sees, not a download of the folder.

pcmanfm opens a folder of 43 genomics files (the demo's real files, several times over)
and a folder of 250 small files; the test waits until the emulator's counters stop moving,
saves a screenshot (``.artifacts/``, or ``$REMOTEFS_TEST_ARTIFACTS``) and asserts from the
counters what browsing cost: at most 5 SB API requests beyond the folder's listing, and at
most 1 MB of file bytes. Xvfb and pcmanfm are started here, on a free display, and stopped
by PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.mount.conftest import PROJECT, TOKEN, platform_mount
from tests.support.emulator import Emulator, start_emulator

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("REMOTEFS_TEST_ARTIFACTS", REPO / ".artifacts"))
GENOMICS = (".bam", ".bai", ".cram", ".crai", ".fa", ".fai", ".vcf.gz", ".tbi", ".bcf",
            ".csi", ".h5ad", ".h5", ".fastq.gz")  # fmt: skip
SETTLED = 3.0
"""Seconds without a request to the emulator after which browsing is over."""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("Xvfb") and shutil.which("pcmanfm")), reason="needs Xvfb and pcmanfm"
    ),
]


def browse_data(demo_tree: Path, root: Path) -> Path:
    """``genomics/``: 43 genomics files (links to the demo's real ones, renamed);
    ``many/``: 250 small files."""
    real = sorted(
        p for p in demo_tree.rglob("*") if p.is_file() and p.name.lower().endswith(GENOMICS)
    )
    assert real, "the demo has no genomics files"
    (root / "genomics").mkdir(parents=True)
    for i in range(43):
        source = real[i % len(real)]
        (root / "genomics" / f"s{i // len(real)}-{source.name}").symlink_to(source)
    (root / "many").mkdir()
    for i in range(250):
        (root / "many" / f"note-{i:03d}.txt").write_text(f"note {i}\n" * (i % 9 + 1))
    return root


def free_display() -> int:
    for number in range(90, 200):
        if (
            not Path(f"/tmp/.X11-unix/X{number}").exists()
            and not Path(f"/tmp/.X{number}-lock").exists()
        ):
            return number
    raise RuntimeError("no free X display number")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def x_server(log: Path) -> Iterator[str]:
    display = f":{free_display()}"
    with open(log, "ab") as out:
        xvfb = subprocess.Popen(
            ["Xvfb", display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
            stdout=out,
            stderr=out,
        )
    try:
        socket = Path(f"/tmp/.X11-unix/X{display[1:]}")
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert xvfb.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.05)
        yield display
    finally:
        stop(xvfb)


def settle(emu: Emulator, limit: float = 90.0) -> dict[str, object]:
    """The emulator's counters once no request has arrived for ``SETTLED`` seconds."""
    deadline = time.monotonic() + limit
    last, quiet_since = -1, time.monotonic()
    while True:
        stats = emu.stats()
        if stats["arrived"] != last:
            last, quiet_since = stats["arrived"], time.monotonic()
        elif time.monotonic() - quiet_since >= SETTLED and last > 0:
            return stats
        assert time.monotonic() < deadline, f"browsing did not settle: {stats}"
        time.sleep(0.2)


def screenshot(display: str, name: str) -> Path:
    from PIL import ImageGrab

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    image = ImageGrab.grab(xdisplay=display)
    image.save(path)
    colours = image.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 16, "the screen is blank"  # a window is drawn
    return path


@pytest.mark.parametrize("platform", ["sevenbridges", "genestack"])
@pytest.mark.parametrize("folder", ["genomics", "many"])
def test_pcmanfm_browsing_a_folder_costs_no_download(
    platform: str, folder: str, demo_tree: Path, tmp_path: Path
) -> None:
    data = browse_data(demo_tree, tmp_path / "data")
    emu = start_emulator(["--data", str(data), "--project", PROJECT], tmp_path / "e.log", (TOKEN,))
    try:
        with platform_mount(platform, emu, tmp_path) as m, x_server(tmp_path / "x.log") as display:
            target = m.path / (folder if platform == "sevenbridges" else "studies")
            if platform == "genestack":
                target = next(p for p in target.iterdir() if p.name.startswith(folder))
            emu.reset()
            home = tmp_path / "home"
            home.mkdir()
            env = {**os.environ, "DISPLAY": display, "HOME": str(home), "NO_AT_BRIDGE": "1"}
            env.pop("DBUS_SESSION_BUS_ADDRESS", None)
            with open(tmp_path / "pcmanfm.log", "ab") as out:
                browser = subprocess.Popen(
                    ["pcmanfm", "--no-desktop", str(target)], env=env, stdout=out, stderr=out
                )
            try:
                stats = settle(emu)
                shot = screenshot(display, f"pcmanfm-{platform}-{folder}.png")
                assert browser.poll() is None, (tmp_path / "pcmanfm.log").read_text()[-2000:]
            finally:
                stop(browser)
    finally:
        emu.stop()
    requests: dict[str, int] = stats["requests"]  # type: ignore[assignment]
    sent: dict[str, int] = stats["bytes"]  # type: ignore[assignment]
    listing = {
        "sb.files.list",
        "odm.files.list",
        "odm.files.by_study",
        "odm.studies.list",
        "odm.head",
    }
    api = sum(n for route, n in requests.items() if route not in listing | {"sb.storage"})
    fetched = sent.get("sb.storage", 0) + sent.get("odm.download", 0)
    print(
        f"\npcmanfm {platform} {folder}/: {fetched} bytes fetched, requests {requests}; "
        f"screenshot {shot}"
    )
    if platform == "sevenbridges":
        assert api <= 5, requests  # beyond the folder's listing
    assert fetched <= 1_000_000, (fetched, requests)
