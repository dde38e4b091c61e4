"""Entry metadata: optional name/value pairs given at upload, kept with the file, returned in every FileResponse."""

from __future__ import annotations

import pytest
from apihelpers import entry_files, start, upload

from service.core.names import default_key, metadata_error

pytestmark = pytest.mark.anyio

PAIRS = {"filename": "report 2024 ☃.pdf", "owner-id": "A_7", "empty": ""}

BAD_METADATA = [
    {f"n{i}": "v" for i in range(33)},
    {"": "v"},
    {"x" * 65: "v"},
    {"a b": "v"},
    {"é": "v"},
    {"a.b": "v"},
    {"name": "v" * 1025},
]


async def test_metadata_is_kept_and_returned_everywhere(client):
    done = await upload(client, "b", "k", b"hello", metadata=PAIRS, chunk=2)
    assert done["metadata"] == PAIRS
    assert (await client.get("/v1/files/b/k")).json()["metadata"] == PAIRS
    listed = (await client.get("/v1/files/b")).json()["data"]
    assert [file["metadata"] for file in listed] == [PAIRS]
    assert (await client.delete("/v1/files/b/k")).json()["metadata"] == PAIRS


async def test_without_metadata_a_file_has_none(client):
    assert (await upload(client, "b", "k", b"x"))["metadata"] == {}
    assert (await upload(client, "b", "empty", b""))["metadata"] == {}


async def test_an_empty_file_keeps_its_metadata(client):
    assert (await upload(client, "b", "empty", b"", metadata={"a": "1"}))["metadata"] == {"a": "1"}


async def test_the_limits_themselves_are_allowed(client):
    pairs = {f"{'n' * 62}{i:02}": "v" * 1024 for i in range(32)}
    assert (await upload(client, "b", "k", b"x", metadata=pairs))["metadata"] == pairs


@pytest.mark.parametrize("metadata", BAD_METADATA)
async def test_metadata_breaking_the_rules_is_refused_and_nothing_stored(client, settings, metadata):
    response = await start(client, "b", "k", 1, metadata=metadata)
    assert response.status_code == 400, response.text
    assert "metadata" in response.json()["detail"]
    assert (await client.get("/v1/files/b")).json()["data"] == []


@pytest.mark.parametrize("metadata", [{"a": 1}, {"a": None}, ["a"], "a=b"])
async def test_metadata_values_must_be_strings(client, metadata):
    assert (await start(client, "b", "k", 1, metadata=metadata)).status_code == 400


async def test_an_entry_written_before_metadata_reads_as_none(client, settings):
    await upload(client, "b", "k", b"x")
    [path] = entry_files(settings.data_dir)
    path.write_text(path.read_text().replace(',"metadata":{}', ""))
    assert "metadata" not in path.read_text()
    assert (await client.get("/v1/files/b/k")).json()["metadata"] == {}


def test_metadata_rule_table():
    assert metadata_error(PAIRS) is None
    assert metadata_error({}) is None
    for metadata in BAD_METADATA:
        assert metadata_error(metadata) is not None


@pytest.mark.parametrize(
    ("filename", "key"),
    [
        ("photo.jpg", "ID/photo.jpg"),
        ("a/b\\c d.txt", "ID/a_b_c_d.txt"),
        ("été.png", "ID/_t_.png"),
        ("..", "ID/__"),
        (".", "ID/_"),
        ("...", "ID/___"),
        (".hidden", "ID/.hidden"),
        ("", "ID"),
        (None, "ID"),
    ],
)
def test_default_key_from_a_file_name(filename, key):
    assert default_key("ID", filename) == key
