"""Files shipped inside the package and served as they are: the interactive API docs at /docs.

They live under service/http/static/ (installed as package data), are found through the
package wherever it is installed, and are served by a StaticFiles mount of a package
directory (`package_files`), which another page of files can reuse. They need no token:
they hold no data, and the page's "Authorize" button is where the token goes.
"""

from __future__ import annotations

from importlib.resources import files

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

PACKAGE = "service.http"
STATIC = "static"


def package_file(name: str) -> bytes:
    """The bytes of service/http/static/<name>."""
    return files(PACKAGE).joinpath(STATIC, name).read_bytes()


def package_files(directory: str) -> StaticFiles:
    """The files of service/http/static/<directory>, served with ETag and Last-Modified."""
    return StaticFiles(packages=[(PACKAGE, f"{STATIC}/{directory}")])


def docs_routes() -> list[BaseRoute]:
    """GET /docs: Swagger UI on /openapi.json, its scripts and styles under /docs/ (vendored, same origin)."""
    page = package_file("docs.html")

    async def docs(request: Request) -> Response:
        return HTMLResponse(page)

    return [Route("/docs", docs, methods=["GET"]), Mount("/docs", app=package_files("docs"), name="docs-files")]
