"""Schemathesis against the service's own /openapi.json, on a running `files-service serve`.

Every operation of the document gets generated requests (schema-conformant and not, from the
examples, coverage and fuzzing phases), each answered by a real process on a real Redis. Every
answer must be no server error (5xx) and conform to the document: a declared status code, the
declared content type, a body that matches the declared schema, and the declared headers.
It runs twice: with the service open, and with bearer tokens on (each request then goes once
without a token and once with one that may only do part of what the document describes).

schemathesis itself leaves out the operation that serves the document (GET /openapi.json);
`test_the_served_document_is_valid_openapi` covers that one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.http.openapi import build_openapi

from .harness import FilesClient, ServiceProcess, expect

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Bounded: 33 operations, each with its examples, coverage cases and this many fuzzed ones.
EXAMPLES_PER_OPERATION = 50
CONFIG = schemathesis.Config.from_dict(
    {"generation": {"max-examples": EXAMPLES_PER_OPERATION, "database": "none"}, "seed": 20261126}
)
# The chunks of /tus/ (tus's and the IETF draft's media types) are bytes, as application/octet-stream.
schemathesis.serializer.alias(
    ["application/offset+octet-stream", "application/partial-upload"], "application/octet-stream"
)
# The bucket and key the document gives as examples of its path parameters.
EXAMPLE_FILE = ("photos", "2024/cat.jpg")
EXAMPLE_CONTENT = bytes(range(256)) * 4
# With tokens on: the probe may create sessions anywhere but read only `photos` and delete nothing,
# so that 401s, 403s and successes all come up; the seeder only (re)creates the example file.
PROBE_TOKEN = "probe-token-for-the-schema-test"
SEEDER_TOKEN = "seeder-token-for-the-schema-test"
TOKENS = {
    "tokens": [
        {"name": "probe", "sha256": hashlib.sha256(PROBE_TOKEN.encode()).hexdigest(),
         "buckets": {"photos": ["read", "write"], "*": ["write"]}},
        {"name": "seeder", "sha256": hashlib.sha256(SEEDER_TOKEN.encode()).hexdigest(),
         "buckets": {"photos": ["read", "write"]}},
    ]
}  # fmt: skip


class Target:
    """The running service, and how the test talks to it."""

    def __init__(self, process: ServiceProcess, tokens: bool) -> None:
        self.process = process
        self.tokens = tokens
        self.seeder: FilesClient = process.client()
        if tokens:
            self.seeder.http.headers["Authorization"] = f"Bearer {SEEDER_TOKEN}"

    def ensure_example_file(self) -> None:
        if self.seeder.info(*EXAMPLE_FILE).status_code == 404:
            self.seeder.upload(*EXAMPLE_FILE, EXAMPLE_CONTENT, mime_type="image/jpeg")


@pytest.fixture(params=["open", "tokens"])
def target(request: pytest.FixtureRequest, services, tmp_path: Path) -> Target:
    # schemathesis' lazy loader (4.x) renames the test node through `_nodeid`, which pytest 9 no
    # longer has; give the node one so that the loader works (it only affects report names).
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
    env = {}
    if request.param == "tokens":
        tokens_file = tmp_path / "tokens.json"
        tokens_file.write_text(json.dumps(TOKENS))
        env["FILES_AUTH_TOKENS_FILE"] = str(tokens_file)
    return Target(services.start(**env), tokens=request.param == "tokens")


@pytest.fixture
def api_schema(target: Target):
    return schemathesis.openapi.from_url(f"{target.process.base_url}/openapi.json", config=CONFIG)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_to_the_document(case, target: Target) -> None:
    # The file the document's examples name exists (again, after a generated DELETE removed it),
    # so that the examples reach the 200, 206, 304 and 416 answers as well as the 404s.
    target.ensure_example_file()
    base_url = target.process.base_url
    if target.tokens:
        case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)  # no token: 401 where one is needed
        case.call_and_validate(
            base_url=base_url, checks=CHECKS, timeout=30, headers={"Authorization": f"Bearer {PROBE_TOKEN}"}
        )
    else:
        case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)


@pytest.mark.parametrize("target", ["open"], indirect=True)
def test_the_served_document_is_valid_openapi(target: Target) -> None:
    """schemathesis leaves out the operation that serves the document itself: checked here instead."""
    response = expect(target.seeder.http.get("/openapi.json"), 200)
    assert response.headers["content-type"] == "application/json"
    assert response.json() == build_openapi()
    loaded = schemathesis.openapi.from_dict(response.json(), config=CONFIG)
    loaded.validate()  # raises when the document breaks the OpenAPI 3.1 meta-schema
    documented = {(path, method) for path, item in response.json()["paths"].items() for method in item}
    assert ("/openapi.json", "get") in documented
