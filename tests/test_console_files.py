"""The web console's files: served at / and /console/ without a token, and naming nothing of another origin."""

from __future__ import annotations

import json
import re

import pytest
from conftest import http_client

from service.core.auth import new_token

pytestmark = pytest.mark.anyio

MODULES = ["app.js", "api.js", "browse.js", "dom.js", "transfers.js", "uploads.js"]
IMPORT = re.compile(r'^import .* from "\./([a-z]+\.js)";$', re.MULTILINE)


async def test_the_page_and_every_module_it_imports_are_served_without_a_token(make_app, tmp_path):
    _, entry = new_token("someone")
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [entry]}))
    async with http_client(make_app(auth_tokens_file=tokens)) as guarded:
        assert (await guarded.get("/v1/files")).status_code == 401
        page = await guarded.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'src="console/app.js"' in page.text and 'href="console/console.css"' in page.text
        imported = set()
        for name in MODULES:
            module = await guarded.get(f"/console/{name}")
            assert module.status_code == 200 and "javascript" in module.headers["content-type"], name
            imported |= set(IMPORT.findall(module.text))
        assert imported | {"app.js"} == set(MODULES)
        assert (await guarded.get("/console/console.css")).headers["content-type"].startswith("text/css")


async def test_no_file_of_the_console_names_another_origin(client):
    texts = [(await client.get(path)).text for path in ["/", "/console/console.css"]]
    texts += [(await client.get(f"/console/{name}")).text for name in MODULES]
    for text in texts:
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]", text, re.IGNORECASE), re.findall(r"https?://\S+", text)
        assert "@import" not in text and "@font-face" not in text
