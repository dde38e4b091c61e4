"""`FilesClient`: the contract's routes as Python calls, over httpx; no printing, no retrying.

Every non-2xx answer becomes an `ApiError` carrying the server's `detail`, so callers
(the CLI, a script) handle one kind of failure and can show the server's own words.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Self

import httpx

DEFAULT_URL = "http://127.0.0.1:8321"
# Completing an upload hashes and flushes the whole file before the answer: allow it time.
TIMEOUT = httpx.Timeout(120.0, connect=10.0)
PAGE_SIZE = 1000
# Answers worth trying again after a pause: the server is busy, restarting or briefly overloaded.
TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})


class ApiError(Exception):
    """A non-2xx answer: its status and the server's JSON error body (`detail`, `code`, `offset`...)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        self.detail = str(body.get("detail") or f"the server answered {status}")
        super().__init__(self.detail)

    @property
    def code(self) -> str | None:
        return self.body.get("code")

    @property
    def offset(self) -> int | None:
        """The session's current offset, which a 409 for a wrong Upload-Offset carries."""
        offset = self.body.get("offset")
        return offset if isinstance(offset, int) else None

    @property
    def transient(self) -> bool:
        """Whether the same request may succeed later (another writer's lock is held only briefly)."""
        return self.status in TRANSIENT_STATUSES or self.code == "session_busy"


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    response.read()
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    body.setdefault("detail", response.text.strip()[:500] or f"{response.status_code} {response.reason_phrase}")
    raise ApiError(response.status_code, body)


class FilesClient:
    """One service's API, with a bearer token when given; use as a context manager to close connections."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: httpx.Timeout = TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """`transport` replaces the network, e.g. to call an app in the same process (tests)."""
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        return _checked(self.http.request(method, url, **kwargs)).json()

    def token(self) -> dict:
        """What the token may do: `{"name", "open", "buckets": {bucket or "*": [actions]}}`."""
        return self._json("GET", "/v1/token")

    def create_session(self, bucket: str, key: str, size: int, mime_type: str, digest: str | None = None) -> dict:
        """Start an upload; a FileUploadResponse, or already a FileResponse for an empty file or, with a blake3
        `digest` of content the service holds where the token may read it, one with `"deduplicated": true`."""
        body: dict[str, Any] = {"bucket": bucket, "key": key, "mime_type": mime_type, "size": size}
        if digest is not None:
            body["digest"] = digest
        return self._json("POST", "/v1/files", json=body)

    def upload_chunk(self, session_id: str, content: Iterable[bytes], offset: int, length: int) -> dict:
        """Send `length` bytes starting at `offset`; the session (offset advanced) or, when complete, the file.

        The length is declared up front, so the server counts what arrives even if the body breaks off.
        """
        headers = {"Upload-Offset": str(offset), "Content-Length": str(length)}
        return self._json("POST", f"/v1/files/session:{session_id}", content=content, headers=headers)

    def session(self, session_id: str) -> dict:
        return self._json("GET", f"/v1/files/session:{session_id}")

    def cancel(self, session_id: str) -> None:
        _checked(self.http.delete(f"/v1/files/session:{session_id}"))

    def buckets(self) -> list[str]:
        return [bucket["name"] for bucket in self._json("GET", "/v1/files")["data"]]

    def list(self, bucket: str, prefix: str = "", page_size: int = PAGE_SIZE) -> Iterator[dict]:
        """Every file of the bucket whose key starts with `prefix`, in key order, a page at a time."""
        params: dict[str, Any] = {"prefix": prefix, "limit": page_size}
        while True:
            page = self._json("GET", f"/v1/files/{bucket}", params=params)
            yield from page["data"]
            if not page["has_more"] or not page["data"]:
                return
            params["after"] = page["data"][-1]["key"]

    def info(self, bucket: str, key: str) -> dict:
        return self._json("GET", f"/v1/files/{bucket}/{key}")

    def delete(self, bucket: str, key: str) -> dict:
        return self._json("DELETE", f"/v1/files/{bucket}/{key}")

    @contextmanager
    def download(self, bucket: str, key: str, start: int = 0) -> Iterator[httpx.Response]:
        """The content as a streamed response, from byte `start` on (206, or 200 if the range was ignored)."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        with self.http.stream("GET", f"/v1/files/{bucket}/{key}:content", headers=headers) as response:
            yield _checked(response)
