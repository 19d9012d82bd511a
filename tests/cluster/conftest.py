"""A real ``redis-server`` per test, on a free loopback port, stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis import Redis, free_port, redis_unavailable


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    reason = redis_unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = Redis(port=free_port(), log=tmp_path / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
