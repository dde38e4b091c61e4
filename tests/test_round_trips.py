"""How many round trips to Redis (and commands) the busiest operations make: each is a wait on the
network and some 50 µs of redis-py's CPU on the event loop, so a change that adds one shows here.

Counted on a client that records each command it sends and each pipeline it executes (a pipeline
is one round trip whatever it holds), after one operation of each kind has loaded the scripts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest
from apihelpers import start, upload
from conftest import http_client
from redisrecording import record_round_trips
from test_tus import create, metadata

from service.http.app import create_app

pytestmark = pytest.mark.anyio


@dataclass
class Counts:
    trips: list[list[str]] = field(default_factory=list)  # the commands of each round trip

    def reset(self) -> None:
        self.trips.clear()

    def __call__(self) -> tuple[int, int]:
        """Round trips, commands."""
        return len(self.trips), sum(len(trip) for trip in self.trips)


def counting_client(counts: Counts) -> fakeredis.FakeAsyncRedis:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)
    return record_round_trips(client, lambda trip: counts.trips.append([str(command[0]).upper() for command in trip]))


@pytest.fixture
def counts() -> Counts:
    return Counts()


@pytest.fixture
async def client(settings, counts: Counts) -> Any:
    app = create_app(settings, client=counting_client(counts))
    async with http_client(app) as client:
        # Load every script these operations run, and register the buckets, before counting.
        await upload(client, "b", "warm", b"w" * 4096)
        await tus_with_upload(client, "warm-tus", b"w" * 4096)
        assert (await client.get("/v1/files/b")).status_code == 200
        counts.reset()
        yield client


async def tus_with_upload(client: Any, key: str, content: bytes) -> None:
    headers = {"Upload-Metadata": metadata(bucket="b", key=key), "Content-Type": "application/offset+octet-stream"}
    response = await create(client, len(content), headers, content=content)
    assert response.status_code == 201 and response.headers["upload-offset"] == str(len(content)), response.text


async def test_a_small_upload_in_one_request(client, counts: Counts):
    await upload(client, "b", "small", b"s" * 4096)
    assert counts() == (8, 11), counts.trips


async def test_a_tus_creation_with_upload(client, counts: Counts):
    await tus_with_upload(client, "tus", b"t" * 4096)
    print(counts.trips)
    assert counts() == (8, 11), counts.trips


async def test_a_page_of_a_listing(client, counts: Counts):
    response = await client.get("/v1/files/b", params={"limit": 2})
    assert response.status_code == 200 and len(response.json()["data"]) == 2, response.text
    assert counts() == (1, 2), counts.trips


async def test_a_full_set_of_open_sessions_is_swept_once_for_creations_at_once(settings, counts: Counts):
    app = create_app(settings.model_copy(update={"max_open_sessions": 4}), client=counting_client(counts))
    async with http_client(app) as client:
        for index in range(4):
            await upload(client, "b", f"done-{index}", b"d")
        counts.reset()
        created = await asyncio.gather(*(start(client, "b", f"new-{index}", 1) for index in range(4)))
    assert [response.status_code for response in created] == [200] * 4
    assert [trip for trip in counts.trips if "SMEMBERS" in trip] == [["SMEMBERS"]], counts.trips
