"""Mount fixtures: the demo dataset served by an emulator subprocess, mounted for real.

Every mount is made in a subprocess and unmounted in a ``finally``; only processes started
here are stopped, by PID.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from remotefs.emulator.dataset import Dataset, load_dataset
from remotefs.emulator.demo import build_demo
from tests.support.emulator import Emulator, start_emulator
from tests.support.fuse import Mount, fuse_unavailable, start_mount

TOKEN = "mount-test-token"
PROJECT = "demo-user/demo"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = fuse_unavailable()
    if reason:
        for item in items:
            if "tests/mount/" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=f"FUSE unavailable: {reason}"))


@pytest.fixture(scope="session")
def demo_tree(demo_cache: Path) -> Path:
    return build_demo(demo_cache)


@pytest.fixture(scope="session")
def demo_dataset(demo_tree: Path) -> Dataset:
    return load_dataset(demo_tree, user="demo-user", project=PROJECT)


@pytest.fixture(scope="session")
def demo_emulator(demo_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    log = tmp_path_factory.mktemp("demo-emulator") / "emulator.log"
    emu = start_emulator(["--data", str(demo_tree), "--project", PROJECT], log, (TOKEN,))
    try:
        yield emu
    finally:
        emu.stop()


@contextmanager
def emulated(demo_tree: Path, tmp_path: Path, *knobs: str) -> Iterator[Emulator]:
    """An emulator of the demo dataset of its own, with ``knobs`` (``--latency-ms 40`` …),
    logging to ``tmp_path/emu.log``; stopped on the way out."""
    emu = start_emulator(
        ["--data", str(demo_tree), "--project", PROJECT, *knobs], tmp_path / "emu.log", (TOKEN,)
    )
    try:
        yield emu
    finally:
        emu.stop()


def sb_env(emulator: Emulator) -> dict[str, str]:
    return {"SB_AUTH_TOKEN": TOKEN, "SB_API_ENDPOINT": f"{emulator.url}/v2"}


def odm_env(emulator: Emulator) -> dict[str, str]:
    return {"GENESTACK_API_TOKEN": TOKEN}


def mount_args(platform: str, emulator: Emulator, cache: Path) -> list[str]:
    args = ["--platform", platform, "--cache-dir", str(cache)]
    if platform == "sevenbridges":
        return [*args, "--api-url", f"{emulator.url}/v2", "--project", PROJECT]
    return [*args, "--api-url", emulator.url]


@contextmanager
def platform_mount(
    platform: str,
    emulator: Emulator,
    base: Path,
    *extra: str,
    name: str = "m",
    cache: Path | None = None,
) -> Iterator[Mount]:
    """A real mount of ``emulator`` for ``platform`` at ``base/name`` (cache ``base/name-cache``
    unless given, log ``base/name.log``), unmounted on exit with a clean exit asserted."""
    env = sb_env(emulator) if platform == "sevenbridges" else odm_env(emulator)
    args = [*mount_args(platform, emulator, cache or base / f"{name}-cache"), *extra]
    mount = start_mount(base / name, args, env, base / f"{name}.log")
    try:
        yield mount
    finally:
        mount.close()


@pytest.fixture(scope="module", params=["sevenbridges", "genestack"])
def mounted(
    request: pytest.FixtureRequest, demo_emulator: Emulator, tmp_path_factory
) -> Iterator[Mount]:
    platform = request.param
    with platform_mount(platform, demo_emulator, tmp_path_factory.mktemp(f"mnt-{platform}")) as m:
        yield m
