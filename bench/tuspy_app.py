"""tuspyserver as its README sets it up: its router on a FastAPI app, storing to a local folder.

Run by the benchmark in bench/.peers/venv, as one process under the same uvicorn settings as
the service: `python bench/tuspy_app.py --port P --dir D`.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from tuspyserver import create_tus_router


def create_app(directory: str) -> FastAPI:
    app = FastAPI()
    app.include_router(create_tus_router(prefix="files", files_dir=directory))
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
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


if __name__ == "__main__":
    main()
