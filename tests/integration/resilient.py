"""Uploads from client threads that keep going through a Redis outage, as a careful client does.

Each thread uploads its files a chunk at a time, taking turns between the service processes
(any worker takes any chunk). After a failed request it asks the service where the session is
and resumes from there; a session the service no longer knows starts again. Every request is
recorded with when it began and ended and what it got, so that a test can say which requests
failed and when.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from .harness import OCTET_STREAM, FilesClient, ServiceProcess, assert_content, wait_for

RETRY_PAUSE = 0.05  # between a client's tries, as any client backs off; never to wait for the test


@dataclass(frozen=True)
class Attempt:
    began: float
    ended: float
    what: str
    status: int | None  # None: no answer (the connection failed)
    code: str | None


@dataclass
class Upload:
    bucket: str
    key: str
    content: bytes
    result: dict | None = None
    restarts: int = 0  # sessions the service lost, so the upload began again


@dataclass
class ResilientUploader:
    """Uploads `count` files of `size` random bytes in `chunk` pieces from a thread of its own."""

    services: list[ServiceProcess]
    name: str
    count: int
    size: int
    chunk: int
    deadline_seconds: float = 120.0
    uploads: list[Upload] = field(init=False)
    attempts: list[Attempt] = field(default_factory=list)
    acknowledged: int = 0  # chunks answered 200
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.uploads = [Upload("resilient", f"{self.name}/{n}.bin", os.urandom(self.size)) for n in range(self.count)]
        self._clients = [FilesClient(process.base_url) for process in self.services]
        self._turn = 0
        self._deadline = 0.0
        self._thread = threading.Thread(target=self._run, name=f"uploader-{self.name}", daemon=True)

    def start(self) -> ResilientUploader:
        self._deadline = time.monotonic() + self.deadline_seconds
        self._thread.start()
        return self

    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        self._thread.join(self.deadline_seconds + 30)
        for client in self._clients:
            client.close()
        assert not self._thread.is_alive(), f"uploader {self.name} did not finish"
        if self.error is not None:
            raise AssertionError(f"uploader {self.name} failed") from self.error

    def _run(self) -> None:
        try:
            for upload in self.uploads:
                while upload.result is None:
                    self._upload(upload)
        except BaseException as error:  # noqa: BLE001 - reported by join()
            self.error = error

    def _request(self, what: str, send: Callable[[FilesClient], httpx.Response]) -> httpx.Response | None:
        if time.monotonic() > self._deadline:
            raise AssertionError(f"uploader {self.name} ran out of time; attempts: {self.attempts[-20:]}")
        client = self._clients[self._turn % len(self._clients)]
        self._turn += 1
        began = time.monotonic()
        try:
            response: httpx.Response | None = send(client)
        except httpx.TransportError:
            response = None
        code = None
        if response is not None and response.status_code >= 400:
            code = response.json().get("code")
        status = response.status_code if response is not None else None
        self.attempts.append(Attempt(began, time.monotonic(), what, status, code))
        if response is None or response.status_code >= 500 or code == "session_busy":
            time.sleep(RETRY_PAUSE)
        return response

    def _upload(self, upload: Upload) -> None:
        """One session: create it, send from the offset it reports until done; return early if it is lost."""
        body = {"bucket": upload.bucket, "key": upload.key, "mime_type": OCTET_STREAM, "size": len(upload.content)}
        created = self._request("create", lambda client: client.http.post("/v1/files", json=body))
        if created is None or created.status_code != 200:
            return
        session_id, offset = created.json()["id"], 0
        while True:
            piece = upload.content[offset : offset + self.chunk]
            response = self._request("chunk", lambda client, piece=piece, at=offset: client.send(session_id, piece, at))
            if response is not None and response.status_code == 200:
                self.acknowledged += 1
                answer = response.json()
                if "digest" in answer:
                    upload.result = answer
                    return
                offset = answer["offset"]
                continue
            if response is not None and response.json().get("code") == "offset_mismatch":
                offset = response.json()["offset"]
                continue
            if response is not None and response.json().get("code") == "session_busy":
                continue
            if response is not None and response.json().get("code") == "session_completed":
                # The completing request failed (503) after its commit: the file is there.
                upload.result = self._info(upload)
                return
            where = self._where(session_id)
            if where is None:
                upload.restarts += 1
                return
            offset = where

    def _info(self, upload: Upload) -> dict:
        while True:
            response = self._request("info", lambda client: client.info(upload.bucket, upload.key))
            if response is not None and response.status_code == 200:
                return response.json()

    def _where(self, session_id: str) -> int | None:
        """The session's offset as the service reports it, asked until it answers; None once it is unknown."""
        while True:
            response = self._request("offset", lambda client: client.session(session_id))
            if response is not None and response.status_code == 200:
                return int(response.json()["offset"])
            if response is not None and response.status_code == 404:
                return None


def finish(uploaders: list[ResilientUploader]) -> None:
    """Wait for every uploader (each closes its connections), then report the first that failed."""
    failures = []
    for uploader in uploaders:
        try:
            uploader.join()
        except AssertionError as error:
            failures.append(error)
    if failures:
        raise failures[0]


def listed_keys(process: ServiceProcess) -> list[str]:
    return sorted(entry["key"] for entry in process.api.files("resilient"))


def check_every_file(uploaders: list[ResilientUploader], services: list[ServiceProcess]) -> None:
    """Every upload completed, is listed by every service, and downloads byte for byte.

    A failover may have lost the index changes of the last commits the old master acknowledged: those
    files are listed again by the sweep's catch-up (docs/design.md), so the listing is waited for."""
    uploads = [upload for uploader in uploaders for upload in uploader.uploads]
    assert all(upload.result is not None for upload in uploads)
    keys = sorted(upload.key for upload in uploads)
    for process in services:
        wait_for(lambda process=process: listed_keys(process) == keys, 60, f"{process.name} to list every file")
        listed = {entry["key"]: entry for entry in process.api.files("resilient")}
        for upload in uploads:
            assert listed[upload.key]["bytes"] == len(upload.content)
    for number, upload in enumerate(uploads):
        process = services[number % len(services)]
        assert_content(process.api.content(upload.bucket, upload.key), upload.content)
