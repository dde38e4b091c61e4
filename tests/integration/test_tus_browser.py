"""tus-js-client in a real Chromium, on a page of another origin than the service's (FILES_CORS_ORIGINS),
with tokens on: tus 1.0.0 and the IETF draft (its protocols `ietf-draft-03` and `ietf-draft-05`). Each
upload works only if every preflight passes without a token and the page may read the answers'
headers (Location, Upload-Offset); each is checked byte for byte through the seed's download route."""

from __future__ import annotations

import functools
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest

from service.core.auth import new_token

from .browser import STEP_SECONDS
from .harness import assert_content, wait_for
from .test_tus_clients import NODE_DIR, node_client  # noqa: F401 - the fixture that installs tus-js-client

SIZE = 700 * 1024 + 13
# The page makes its content from this rule, so that the test knows it without sending it to the page.
CONTENT = bytes((index * 31 + 7) % 256 for index in range(SIZE))
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>tus-js-client</title>
<script src="tus.min.js"></script>
<script>
const options = Object.fromEntries(new URLSearchParams(location.search));
const bytes = new Uint8Array(Number(options.size)).map((_, index) => (index * 31 + 7) % 256);
const upload = new tus.Upload(new Blob([bytes]), {
  endpoint: options.endpoint,
  protocol: options.protocol,
  chunkSize: 256 * 1024,
  retryDelays: [0, 500, 1000],
  headers: { Authorization: `Bearer ${options.token}` },
  metadata: { bucket: "browser", key: options.protocol, filetype: "application/x-test" },
  onSuccess() { window.result = { url: upload.url }; },
  onError(error) { window.result = { error: String(error) }; },
});
upload.start();
</script>
"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture
def page_origin(node_client: Path, tmp_path: Path) -> Iterator[str]:  # noqa: F811
    """A page and tus-js-client's browser build, served from an origin of their own."""
    folder = tmp_path / "page"
    folder.mkdir()
    (folder / "index.html").write_text(PAGE)
    shutil.copy(NODE_DIR / "node_modules" / "tus-js-client" / "dist" / "tus.min.js", folder)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_tus_and_the_draft_from_a_page_of_another_origin(services, page_origin, browser, tmp_path):
    token, entry = new_token("page")
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(json.dumps({"tokens": [entry]}))
    process = services.start(FILES_CORS_ORIGINS=page_origin, FILES_AUTH_TOKENS_FILE=str(tokens_file))
    reader = process.client()
    reader.http.headers["Authorization"] = f"Bearer {token}"
    for protocol in ("tus-v1", "ietf-draft-03", "ietf-draft-05"):
        query = {"endpoint": f"{process.base_url}/tus/", "protocol": protocol, "token": token, "size": SIZE}
        browser.get(f"{page_origin}/index.html?{urlencode(query)}")
        result = wait_for(lambda: browser.execute_script("return window.result"), STEP_SECONDS, f"{protocol} upload")
        assert "error" not in result, (protocol, result, browser.get_log("browser"))
        assert result["url"].startswith(f"{process.base_url}/tus/")
        download = reader.content("browser", protocol)
        assert_content(download, CONTENT)
        assert download.headers["content-type"] == "application/x-test"
