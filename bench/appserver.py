"""Running a Python comparison app as one process under the service's uvicorn settings.

Shared by bench/ceiling.py and bench/tuspy_app.py (each run as a script, so this
folder is on their import path): `--host`, `--port`, `--dir`; uvloop, httptools.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import uvicorn


def serve(create_app: Callable[[str], Any], description: str | None) -> None:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    arguments = parser.parse_args()
    uvicorn.run(
        create_app(arguments.dir),
        host=arguments.host,
        port=arguments.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
