"""A soak with faults: two service processes on one Redis and one data directory, a worker killed
with SIGKILL and started again in a loop, the Redis server restarted (losing everything), and
client threads uploading files of 0 to 3 MiB in random chunks to random workers (and deleting some).

At the end, once the faults stop: every completed upload answers; every file whose info answers
is listed and downloads byte for byte; no temporary older than a minute is left; and the blobs on
disk are exactly the distinct content of the listed files.
FILES_SOAK_SECONDS sets how long the faults go on (the default keeps the test near a minute).
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.storage.durable import TEMPORARY

from .harness import OCTET_STREAM, MiB, assert_content, b3, wait_for

SOAK_SECONDS = float(os.environ.get("FILES_SOAK_SECONDS", "40"))
CLIENTS = 6
CONVERGE_SECONDS = 60
GIVE_UP_SECONDS = 30  # a client abandons an upload that has not completed by then
BACKOFF_SECONDS = 0.05  # between the tries of a client after a failure: a retry, not a wait for anything
BUCKET = "soak"


@dataclass
class Upload:
    seed: int
    size: int
    completed: bool = False  # the service answered the completing request with the file
    delete_sent: bool = False  # a delete of it went out: it may be gone even without an answer
    deleted: bool = False  # the service answered a delete of it with 200

    def content(self) -> bytes:
        return random.Random(self.seed).randbytes(self.size)


class Client(threading.Thread):
    """Uploads (and now and then deletes) files through random workers until told to stop."""

    def __init__(self, number: int, urls: list[str], stop: threading.Event) -> None:
        super().__init__(name=f"soak-client-{number}", daemon=True)
        self.number = number
        self.random = random.Random(number)
        self.http = [httpx.Client(base_url=url, timeout=10) for url in urls]
        self.stop = stop
        self.uploads: dict[str, Upload] = {}  # this client's own, by key
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            for count in range(1_000_000):
                if self.stop.is_set():
                    return
                self.step(f"c{self.number}/{count}")
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.failure = error
        finally:
            for http in self.http:
                http.close()

    def step(self, key: str) -> None:
        mine = list(self.uploads)
        if mine and self.random.random() < 0.15:
            self.delete(self.random.choice(mine))
            return
        if mine and self.random.random() < 0.2:  # the same content again: stored once, referred to twice
            earlier = self.uploads[self.random.choice(mine)]
            upload = Upload(earlier.seed, earlier.size)
        else:
            size = self.random.choice([0, self.random.randrange(1, 64 * 1024), self.random.randrange(1, 3 * MiB)])
            upload = Upload(self.random.getrandbits(64), size)
        self.uploads[key] = upload
        upload.completed = self.upload(key, upload.content())

    def any(self) -> httpx.Client:
        return self.random.choice(self.http)

    def retry(self) -> None:
        self.stop.wait(BACKOFF_SECONDS)

    def upload(self, key: str, content: bytes) -> bool:
        give_up = time.monotonic() + GIVE_UP_SECONDS
        session_id, offset = None, 0
        while time.monotonic() < give_up and not self.stop.is_set():
            try:
                if session_id is None:
                    body = {"bucket": BUCKET, "key": key, "mime_type": OCTET_STREAM, "size": len(content)}
                    response = self.any().post("/v1/files", json=body)
                    if response.status_code != 200:
                        self.retry()
                        continue
                    if not content:
                        return True
                    session_id, offset = response.json()["id"], 0
                    continue
                end = min(len(content), offset + self.random.randrange(1, 2 * MiB))
                response = self.any().post(
                    f"/v1/files/session:{session_id}",
                    content=content[offset:end],
                    headers={"Upload-Offset": str(offset)},
                )
                if response.status_code == 200:
                    if "digest" in response.json():
                        return True
                    offset = response.json()["offset"]
                    continue
                code = response.json().get("code") if response.status_code < 500 else None
                if code == "session_not_found":  # Redis lost it: start again
                    session_id = None
                elif code == "session_completed":
                    return True
                else:
                    offset = self.offset(session_id)
                    if offset is None:
                        session_id = None
                self.retry()
            except httpx.TransportError:
                self.retry()
                if session_id is not None:
                    offset = self.offset(session_id)
                    if offset is None:
                        session_id = None
        return False

    def offset(self, session_id: str) -> int | None:
        """The session's offset as the service reports it (None: the session is gone), asking until one answers."""
        while not self.stop.is_set():
            try:
                response = self.any().get(f"/v1/files/session:{session_id}")
            except httpx.TransportError:
                self.retry()
                continue
            if response.status_code == 200:
                return response.json()["offset"]
            if response.status_code == 404:
                return None
            self.retry()
        return None

    def delete(self, key: str) -> None:
        self.uploads[key].delete_sent = True
        try:
            response = self.any().delete(f"/v1/files/{BUCKET}/{key}")
        except httpx.TransportError:
            return
        if response.status_code == 200:
            self.uploads[key].deleted = True


def temporaries_older_than(data_dir: Path, seconds: float) -> list[Path]:
    cutoff = time.time() - seconds
    found = []
    for directory, _, names in os.walk(data_dir):
        for name in names:
            path = Path(directory, name)
            if TEMPORARY.fullmatch(name) and path.lstat().st_ctime < cutoff:
                found.append(path)
    return found


def blob_bytes(data_dir: Path) -> int:
    return sum(path.lstat().st_size for path in (data_dir / "blobs").rglob("*") if path.is_file())


def test_soak_with_workers_killed_and_redis_restarted(services, own_redis, data_dir) -> None:
    workers = services.start_many(2, own_redis.url, FILES_BLOB_GRACE_SECONDS="10")
    stop = threading.Event()
    clients = [Client(number, [w.base_url for w in workers], stop) for number in range(CLIENTS)]
    for client in clients:
        client.start()

    chaos = random.Random(0)
    started = time.monotonic()
    restarts_of_redis = [started + SOAK_SECONDS / 3, started + 2 * SOAK_SECONDS / 3]
    kills = 0
    while time.monotonic() < started + SOAK_SECONDS:
        stop.wait(chaos.uniform(1, 3))  # the pace of the faults, not a wait for anything
        victim = chaos.choice(workers)
        victim.kill()
        kills += 1
        if restarts_of_redis and time.monotonic() > restarts_of_redis[0]:
            restarts_of_redis.pop(0)
            own_redis.restart()
        victim.launch()
        victim.wait_ready()
    stop.set()
    for client in clients:
        client.join(GIVE_UP_SECONDS + 30)
        assert client.failure is None, f"{client.name} failed: {client.failure!r}"
    assert kills >= 3 and not restarts_of_redis
    uploads = {key: upload for client in clients for key, upload in client.uploads.items()}
    completed = [key for key, upload in uploads.items() if upload.completed]
    assert len(completed) >= 10, f"only {len(completed)} uploads completed in {SOAK_SECONDS:g} s"

    api = workers[0].api
    answering = {key for key in uploads if api.info(BUCKET, key).status_code == 200}
    lost = [(key, uploads[key]) for key in completed if key not in answering and not uploads[key].delete_sent]
    assert not lost, f"completed uploads that answer 404: {lost}"
    deleted = [key for key in answering if uploads[key].deleted]
    assert not deleted, f"deleted files that still answer: {deleted}"
    wait_for(lambda: answering <= set(api.keys(BUCKET)), CONVERGE_SECONDS, "every file that answers to be listed")
    listing = {entry["key"]: entry for entry in api.files(BUCKET)}
    assert set(listing) == answering, "a listed file does not answer, or the reverse"
    for key in answering:
        assert_content(api.content(BUCKET, key), uploads[key].content())

    distinct = {entry["digest"]: entry["bytes"] for entry in listing.values()}
    wait_for(lambda: blob_bytes(data_dir) == sum(distinct.values()), CONVERGE_SECONDS,
             f"the blobs to hold the {len(distinct)} distinct contents listed, "
             f"{sum(distinct.values())} bytes")  # fmt: skip
    assert {path.name for path in (data_dir / "blobs").rglob("*") if path.is_file()} == {
        digest.removeprefix("blake3:") for digest in distinct
    }
    assert temporaries_older_than(data_dir, 60) == []
    assert all(b3(uploads[key].content()) == listing[key]["digest"].removeprefix("blake3:") for key in answering)
