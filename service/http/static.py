"""Files shipped inside the package and served as they are: the API docs at /docs, the web console at /.

They live under service/http/static/ (installed as package data), are found through the
package wherever it is installed, and are served by a StaticFiles mount of a package
directory (`package_files`). They need no token: they hold no data, and each page asks for
the token itself (the docs' "Authorize" button, the console's sign-in) and sends it to the API.
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


def page_routes(path: str, page_name: str, directory: str) -> list[BaseRoute]:
    """GET `path`: the page static/<page_name>; its scripts and styles, static/<directory>/, under /<directory>/."""
    page = package_file(page_name)

    async def serve_page(request: Request) -> Response:
        return HTMLResponse(page)

    return [
        Route(path, serve_page, methods=["GET"], name=page_name),
        Mount(f"/{directory}", app=package_files(directory), name=f"{directory}-files"),
    ]


def docs_routes() -> list[BaseRoute]:
    """GET /docs: Swagger UI on /openapi.json, its scripts and styles under /docs/ (vendored, same origin)."""
    return page_routes("/docs", "docs.html", "docs")


def console_routes() -> list[BaseRoute]:
    """GET /: the web console (static/console.html), its modules and styles under /console/ (same origin)."""
    return page_routes("/", "console.html", "console")
