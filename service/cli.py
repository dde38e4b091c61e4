"""`files-service`: run the service, check its data directory, make access tokens; and its client."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from importlib.metadata import version

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.client import commands as client_commands
from service.config import ConfigError, Settings
from service.core.auth import Authenticator
from service.ops import events, tokens
from service.ops.listening import CannotListen, check_can_listen
from service.ops.logs import logging_config
from service.ops.tuning import exec_with_allocator_tunables
from service.storage.durable import make_dirs

SERVE_ENVIRONMENT = """\
environment (the settings that matter most; README.md lists them all):
  FILES_DATA_DIR          blobs, entries and partial uploads (default ./data)
  FILES_REDIS_URL         a shared Redis, e.g. redis://127.0.0.1:6379/0 (default: an embedded
                          in-process stand-in, one process only, sessions lost on restart)
  FILES_AUTH_TOKENS_FILE  bearer tokens (files-service token new); unset: open to every request
  FILES_PUBLIC_URL        the base of the url fields (default: from each request)
  FILES_LOG_LEVEL         debug, info, warning, error or critical (default info)
  FILES_LOG_FORMAT        json or text (default json)
"""


def load_settings() -> Settings:
    """The settings, with what can be checked before anything starts checked: the token file, and the
    object store's bucket (a missing one, refused credentials: one line here, not a trace per worker)."""
    settings = Settings.from_env()
    try:
        make_dirs(settings.data_dir)  # FILES_DATA_DIR that cannot be made or used: one line, not a trace
    except OSError as error:
        raise ConfigError(f"FILES_DATA_DIR={settings.data_dir} cannot be used: {error.strerror or error}") from None
    Authenticator.from_file(settings.auth_tokens_file)
    if settings.storage_url is not None:
        from service.storage.s3 import object_store  # boto3 only when the object store is chosen

        object_store(settings.storage_url, settings.s3_endpoint_url)
    return settings


def serve(arguments: argparse.Namespace) -> int:
    import uvicorn

    try:
        check_can_listen(arguments.host, arguments.port)
    except CannotListen as error:
        print(f"files-service: {error}", file=sys.stderr)
        return 1
    settings = load_settings()
    exec_with_allocator_tunables()
    if settings.redis_url is None and arguments.workers > 1:
        raise ConfigError(
            "--workers above 1 needs a shared Redis: set FILES_REDIS_URL "
            "(the embedded stand-in lives inside one process and cannot be shared)"
        )
    with contextlib.ExitStack() as cleanup:
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            # Before any worker imports prometheus_client: all of them then share one set of samples.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = cleanup.enter_context(
                tempfile.TemporaryDirectory(prefix="files-service-metrics-")
            )
        # Once it has shut down gracefully, uvicorn raises the SIGTERM it caught again: exit with
        # status 0 then, through this cleanup, instead of dying of it and leaving the directory behind.
        cleanup.callback(signal.signal, signal.SIGTERM, signal.signal(signal.SIGTERM, _stopped))
        uvicorn.run(
            "service.http.app:create_app",
            factory=True,
            host=arguments.host,
            port=arguments.port,
            workers=arguments.workers,
            loop="uvloop",
            http="httptools",
            log_config=logging_config(arguments.log_level or settings.log_level, settings.log_format),
            # uvicorn's hint says int, but it waits with asyncio.wait_for, which takes fractions of a second too.
            timeout_graceful_shutdown=settings.shutdown_grace_seconds,  # type: ignore[arg-type]
        )
    return 0


def _stopped(signum: int, frame: object) -> None:
    raise SystemExit(0)


def fsck(arguments: argparse.Namespace) -> int:
    from service.ops.fsck import check_data_dir

    return asyncio.run(check_data_dir(load_settings(), arguments.repair, print))


def port(text: str) -> int:
    """A TCP port, 0 to 65535 (uvicorn would take 99999 and listen on 99999 mod 65536)."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is not a port: ports go from 0 to 65535")
    return number


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="files-service", description=__doc__, parents=[client_commands.connection_options(after_command=False)]
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {version('files-service')}")
    commands = top.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the HTTP service. The options say where it listens; every other setting\n"
        "comes from a FILES_* environment variable.",
        epilog=SERVE_ENVIRONMENT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: %(default)s)")
    run.add_argument("--port", type=port, default=8321, help="the TCP port to listen on (default: %(default)s)")
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes; above 1 needs FILES_REDIS_URL (default: %(default)s)",
    )
    run.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="the least severe log lines shown (default: FILES_LOG_LEVEL, else info)",
    )
    run.set_defaults(handler=serve)

    check = commands.add_parser("fsck", help="check the data directory (re-hash blobs, find strays)")
    check.add_argument("--repair", action="store_true", help="fix what is found")
    check.set_defaults(handler=fsck)

    tokens.register(commands)
    events.register(commands)
    client_commands.register(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    arguments = parser().parse_args(argv)
    try:
        return arguments.handler(arguments)
    except ConfigError as error:
        print(f"files-service: {error}", file=sys.stderr)
        return 2
    except (RedisConnectionError, RedisTimeoutError) as error:  # fsck, events: a Redis they must reach
        print(f"files-service: Redis (FILES_REDIS_URL) did not answer: {error}", file=sys.stderr)
        return 1
