"""A cap on the size of request headers, checked before any route runs."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.errors import error_response


class HeaderLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.max_bytes:
                response = error_response(
                    431,
                    f"request headers take {size} bytes, over this service's limit of {self.max_bytes}",
                    "headers_too_large",
                    {"Connection": "close"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
