"""Per request: a request id in and out, one access log line, and the request metrics."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.errors import error_response
from service.ops import metrics
from service.ops.logs import request_id

log = logging.getLogger("files.access")
error_log = logging.getLogger("files.http")

REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
UNMATCHED = "unmatched"


class RequestObserver:
    """`route_of` names the route template that served a request (from the scope, after routing)."""

    def __init__(
        self, app: ASGIApp, route_of: Callable[[Scope], str | None], upload_route: str, download_route: str
    ) -> None:
        self.app = app
        self.route_of = route_of
        self.upload_route = upload_route
        self.download_route = download_route
        # Request ids unique across processes without a system call each: a random part and a counter.
        self.id_prefix = secrets.token_hex(8)
        self.id_count = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if REQUEST_ID.fullmatch(given) else f"{self.id_prefix}{next(self.id_count):016x}"
        token = request_id.set(rid)
        status = 500
        received = sent = 0
        responding = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def tagging_send(message: Message) -> None:
            nonlocal status, sent, responding
            if message["type"] == "http.response.start":
                status, responding = message["status"], True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, tagging_send)
        except Exception:
            # Here rather than in Starlette's outermost handler: the error line carries the request id,
            # and so does the 500, which is logged once.
            error_log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if responding:
                raise  # too late for a 500: the connection is cut
            response = error_response(500, "internal server error; it has been logged", "internal")
            await response(scope, counting_receive, tagging_send)
        finally:
            duration = time.perf_counter() - started
            route = self.route_of(scope) or UNMATCHED
            metrics.REQUESTS.labels(route, scope["method"], str(status)).inc()
            metrics.LATENCY.labels(route).observe(duration)
            if route == self.upload_route:
                metrics.BYTES_RECEIVED.inc(received)
            elif route == self.download_route and status in (200, 206):  # content, not an error body
                metrics.BYTES_SERVED.inc(sent)
            log.info(
                "%s %s %d",
                scope["method"],
                route,
                status,
                extra={
                    "event": "request",
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "bytes_in": received,
                    "bytes_out": sent,
                    "duration_ms": round(duration * 1000, 3),
                },
            )
            request_id.reset(token)
