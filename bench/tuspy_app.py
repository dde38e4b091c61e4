"""tuspyserver as its README sets it up: its router on a FastAPI app, storing to a local folder.

Run by the benchmark in bench/.peers/venv, as one process under the same uvicorn settings as
the service: `python bench/tuspy_app.py --port P --dir D`.
"""

from __future__ import annotations

from appserver import serve
from fastapi import FastAPI
from tuspyserver import create_tus_router


def create_app(directory: str) -> FastAPI:
    app = FastAPI()
    app.include_router(create_tus_router(prefix="files", files_dir=directory))
    return app


if __name__ == "__main__":
    serve(create_app, __doc__)
