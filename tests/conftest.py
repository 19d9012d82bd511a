"""Shared fixtures: the test data tree and an emulator subprocess serving it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from remotefs.emulator.dataset import Dataset, load_dataset
from tests.support.data import write_tree
from tests.support.emulator import Emulator, start_emulator
from tests.support.redis import Redis, free_port, redis_unavailable

TOKEN = "test-token"
PROJECT = "test-user/test-project"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tree(tmp_path_factory.mktemp("data") / "tree")


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache root in which the demo dataset is built once per session (apt-get download)."""
    if shutil.which("apt-get") is None:
        pytest.skip("the demo is built from Debian packages: needs apt-get")
    from remotefs.emulator.demo import build_demo

    root = tmp_path_factory.mktemp("cache")
    build_demo(root)
    return root


@pytest.fixture(scope="session")
def dataset(data_dir: Path) -> Dataset:
    return load_dataset(data_dir, user="test-user", project=PROJECT)


@pytest.fixture(scope="session")
def emulator(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    log = tmp_path_factory.mktemp("emulator") / "emulator.log"
    emu = start_emulator(
        ["--data", str(data_dir), "--user", "test-user", "--project", PROJECT], log, (TOKEN,)
    )
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    """A real ``redis-server`` for one test, on a free loopback port, stopped by PID."""
    reason = redis_unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = Redis(port=free_port(), log=tmp_path / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
