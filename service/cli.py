"""`files-service`: the command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from service.config import ConfigError, Settings


def serve(arguments: argparse.Namespace) -> int:
    import uvicorn

    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"files-service: {error}", file=sys.stderr)
        return 2
    if settings.redis_url is None and arguments.workers > 1:
        print(
            "files-service: --workers above 1 needs a shared Redis: set FILES_REDIS_URL "
            "(the embedded stand-in lives inside one process and cannot be shared)",
            file=sys.stderr,
        )
        return 2
    if os.environ.get("FILES_AUTH_TOKENS_FILE"):
        print(
            "files-service: FILES_AUTH_TOKENS_FILE is set, but this version cannot check bearer tokens yet; "
            "refusing to start rather than serve files openly",
            file=sys.stderr,
        )
        return 2
    logging.getLogger("files.service").warning(
        "FILES_AUTH_TOKENS_FILE is unset: the service is open, every request may do everything"
    )
    uvicorn.run(
        "service.http.app:create_app",
        factory=True,
        host=arguments.host,
        port=arguments.port,
        workers=arguments.workers,
        loop="uvloop",
        http="httptools",
        log_level=arguments.log_level,
        timeout_graceful_shutdown=10,
    )
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="files-service", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the HTTP service")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8321)
    run.add_argument("--workers", type=int, default=1)
    run.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    run.set_defaults(handler=serve)
    return top


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    arguments = parser().parse_args(argv)
    return arguments.handler(arguments)
