"""The API description for tools and people: /openapi.json's security and names, and Swagger UI at /docs."""

from __future__ import annotations

import json
import re
import tomllib
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from conftest import BASE_URL, http_client

from service.core.auth import new_token
from service.http.openapi import build_openapi

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
OPEN_PATHS = {"/healthz", "/readyz", "/openapi.json", "/docs", "/"}
METHODS = {"get", "head", "post", "delete", "put", "patch"}
CONTENT_TYPES = {".css": "text/css", ".js": "javascript", ".png": "image/png"}


def operations(document: dict) -> list[tuple[str, str, dict]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_the_document_declares_the_bearer_scheme_on_every_route_that_needs_a_token():
    document = build_openapi()
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, method, operation in operations(document):
        if path in OPEN_PATHS:
            assert "security" not in operation, (path, method)
        else:
            assert operation["security"] == [{"bearer": []}], (path, method)
            assert "401" in operation["responses"], (path, method)
    assert {path for path, _, _ in operations(document)} >= OPEN_PATHS


def test_every_bucket_description_says_what_the_contract_says():
    document = build_openapi()
    bucket = next(
        parameter
        for _, _, operation in operations(document)
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "bucket"
    )
    body = document["components"]["schemas"]["CreateUploadRequest"]["properties"]["bucket"]
    for described in (bucket["description"], body["description"]):
        assert "1 to 63 characters of a-zA-Z0-9_-" in described
        assert "a-zA-Z0-9_-." not in described, described
    pattern = re.compile(bucket["schema"]["pattern"])
    assert pattern.fullmatch("photos_2024-x") and not pattern.fullmatch("a.b")
    key = document["components"]["schemas"]["CreateUploadRequest"]["properties"]["key"]["description"]
    assert "1 to 1024 characters of a-zA-Z0-9_-/." in key and "'..'" in key


class Links(HTMLParser):
    """Every src and href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


async def assert_docs_served_from_this_origin_alone(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    parser = Links()
    parser.feed(page.text)
    assert len(parser.urls) >= 3, parser.urls  # the style sheet, the icon, the bundle and its start
    origin = urlsplit(BASE_URL)
    for url in parser.urls:
        absolute = urlsplit(urljoin(f"{BASE_URL}/docs", url))
        assert (absolute.scheme, absolute.netloc) == (origin.scheme, origin.netloc), url
        asset = await client.get(absolute.path)
        assert asset.status_code == 200, url
        assert CONTENT_TYPES[Path(absolute.path).suffix] in asset.headers["content-type"], url
        assert asset.content


async def test_docs_page_loads_only_files_of_this_origin(client):
    await assert_docs_served_from_this_origin_alone(client)


async def test_docs_and_their_files_need_no_token_when_tokens_are_on(make_app, tmp_path):
    _, entry = new_token("someone")
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [entry]}))
    async with http_client(make_app(auth_tokens_file=tokens)) as guarded:
        assert (await guarded.get("/v1/files")).status_code == 401
        await assert_docs_served_from_this_origin_alone(guarded)


async def test_the_page_asks_for_this_services_document_and_no_validator(client):
    start = (await client.get("/docs/init.js")).text
    assert '"openapi.json"' in start and "validatorUrl: null" in start
    assert not re.search(r"https?://", start)
    style = (await client.get("/docs/swagger-ui/swagger-ui.css")).text
    assert "@import" not in style and "@font-face" not in style
    assert all(url.startswith("data:") for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", style))


def test_the_vendored_files_are_package_data_with_their_licence():
    static = files("service.http").joinpath("static")
    assert b"swagger-ui-bundle.js" in static.joinpath("docs.html").read_bytes()
    vendored = static.joinpath("docs", "swagger-ui")
    assert "Apache License" in vendored.joinpath("LICENSE").read_text()
    assert re.match(r"swagger-ui-dist \d+\.\d+\.\d+ ", vendored.joinpath("VERSION").read_text())
    # `pip install .` (not only -e) installs exactly what the package-data globs name: every file.
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["service.http"]
    directory = ROOT / "service" / "http"
    shipped = [path.relative_to(directory).as_posix() for path in (directory / "static").rglob("*") if path.is_file()]
    assert len(shipped) >= 8
    assert all(any(covers(glob, name) for glob in globs) for name in shipped), (shipped, globs)


def covers(glob: str, name: str) -> bool:
    """Whether a setuptools package-data glob names this file (a '*' stays within one directory)."""
    return glob.count("/") == name.count("/") and PurePosixPath(name).match(glob)
