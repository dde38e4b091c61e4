"""The webhook dispatcher: POSTs every event to FILES_WEBHOOK_URL, at least once, while the stream holds it.

Every worker runs one; all of them read through one consumer group, so each event goes to one
dispatcher. That one retries it with exponential backoff while the receiver fails (a status other
than 2xx, or no answer) and acks it after the first success. While it retries it keeps touching
the event, so that only a dispatcher whose process died (silent for `claim_idle_seconds`) has its
events claimed and sent by another.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging

import httpx

from service.redis.events import Event, EventStream, consumer_name
from service.redis.leases import stop_if_cancelled

log = logging.getLogger("files.webhooks")

GROUP = "webhooks"
READ_BLOCK_MS = 2000
SIGNATURE_HEADER = "X-Files-Signature"


def signature(secret: str, body: bytes) -> str:
    """The header's value: `sha256=` and the hex HMAC-SHA256 of the exact body with the secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookDispatcher:
    def __init__(
        self,
        stream: EventStream,
        url: str,
        secret: str | None,
        retry_min_seconds: float,
        retry_max_seconds: float,
        timeout_seconds: float,
    ) -> None:
        self.stream = stream
        self.url = url
        self.secret = secret
        self.retry_min_seconds = retry_min_seconds
        self.retry_max_seconds = retry_max_seconds
        self.timeout_seconds = timeout_seconds
        # A live dispatcher touches its event at least this often: once per attempt.
        self.claim_idle_seconds = 2 * (retry_max_seconds + timeout_seconds)
        self.consumer = consumer_name()

    async def run_forever(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_seconds) as http:
            while True:
                try:
                    await self.stream.join(GROUP)
                    while True:
                        await self.dispatch_once(http)
                        stop_if_cancelled()
                except Exception:
                    log.exception("webhook dispatch failed; trying again in %.1f s", self.retry_max_seconds)
                    stop_if_cancelled()
                    await asyncio.sleep(self.retry_max_seconds)

    async def dispatch_once(self, http: httpx.AsyncClient) -> None:
        """Deliver the events of a dead dispatcher, else wait a little for new ones and deliver those."""
        events = await self.stream.claim(GROUP, self.consumer, self.claim_idle_seconds)
        if not events:
            events = await self.stream.take(GROUP, self.consumer, READ_BLOCK_MS)
        for event in events:
            if await self.deliver(http, event):
                await self.stream.ack(GROUP, event["id"])

    async def deliver(self, http: httpx.AsyncClient, event: Event) -> bool:
        """POST until the receiver takes it; False when another dispatcher claimed it meanwhile."""
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        delay = self.retry_min_seconds
        while await self.stream.touch(GROUP, self.consumer, event["id"]):
            try:
                response = await http.post(self.url, content=body, headers=headers)
                if response.is_success:
                    return True
                failure = f"status {response.status_code}"
            except httpx.HTTPError as error:
                failure = f"{type(error).__name__}: {error}"
            log.warning("webhook %s refused event %s (%s); again in %.1f s", self.url, event["id"], failure, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_seconds)
        return False
