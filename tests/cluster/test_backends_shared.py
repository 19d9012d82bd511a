"""Both backends sharing a real Redis through SharedState: two nodes (two backends, two
clients) of one token spend the API requests of one; counted by the in-process emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from remotefs.backends.base import Backend
from remotefs.emulator.app import create_app
from remotefs.emulator.dataset import Dataset
from remotefs.shared import SharedState
from tests.backends import test_genestack as odm
from tests.backends import test_sevenbridges as sb
from tests.conftest import TOKEN
from tests.support.redis import Redis


@asynccontextmanager
async def sharing(backend: Backend, url: str, endpoint: str) -> AsyncIterator[Backend]:
    shared = SharedState(url, endpoint=endpoint, derive_key=backend.derive_key)
    await shared.check()
    async with trio.open_nursery() as nursery:
        await nursery.start(shared.run)
        backend.shared = shared
        try:
            yield backend
        finally:
            nursery.cancel_scope.cancel()


async def test_odm_sizes_cost_one_head_per_file_for_the_cluster(
    dataset: Dataset, redis: Redis
) -> None:
    app = create_app(dataset, {TOKEN})
    async with odm.client_for(app) as first_client, odm.client_for(app) as second_client:
        first = odm.backend_for(first_client)
        second = odm.backend_for(second_client)
        async with sharing(first, redis.url, odm.HOST), sharing(second, redis.url, odm.HOST):
            mine = await odm.all_files(first)
            theirs = await odm.all_files(second)
        await first.aclose()
        await second.aclose()
    assert [(e.id, e.size) for e in theirs.values()] == [(e.id, e.size) for e in mine.values()]
    assert app.stats.requests["odm.head"] == len(dataset.odm_files)
    assert app.stats.requests["odm.files.list"] == 2  # listings are the namespace's to share


async def test_sb_checks_and_signed_urls_cost_one_request_for_the_cluster(
    dataset: Dataset, redis: Redis
) -> None:
    app = create_app(dataset, {TOKEN})
    async with sb.client_for(app) as first_client, sb.client_for(app) as second_client:
        first = sb.backend_for(first_client)
        second = sb.backend_for(second_client)
        async with sharing(first, redis.url, sb.API), sharing(second, redis.url, sb.API):
            await first.check()
            await second.check()  # the project, as the first checked it
            files = [e for e in await first.list_dir(first.root()) if not e.is_dir]
            assert files
            for entry in files:
                assert await first.read(entry, 0, 100) == await second.read(entry, 0, 100)
        await first.aclose()
        await second.aclose()
    assert app.stats.requests["sb.download_info"] == len(files)
    assert app.stats.requests["sb.projects.get"] == 1
