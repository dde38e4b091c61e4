"""Hostile input, as properties (hypothesis): names, paths out of the data directory, Upload-Offset, Range.

Each rule is checked against a reference written here from the contract's text (not from
the service's code), and through HTTP the service is checked to keep every byte it writes
or reads inside its data directory, planted symbolic links included. A sibling directory
`outside` next to the data directory must come out of every example exactly as it went in.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import unicodedata
from pathlib import Path
from typing import Self
from urllib.parse import quote

import anyio
import httpx
import pytest
from apihelpers import asgi_scope
from blake3 import blake3
from conftest import BASE_URL
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from service.core import names
from service.core.errors import RangeNotSatisfiable
from service.http.download import parse_range

pytestmark = pytest.mark.anyio

OCTETS = "application/octet-stream"
HTTP_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- the contract's rules, written again from its text -----------------------------------------

ASCII_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
ASCII_DIGITS = "0123456789"
BUCKET_ALPHABET = frozenset(ASCII_LETTERS + ASCII_DIGITS + "_-")
KEY_ALPHABET = BUCKET_ALPHABET | {"/", "."}


def contract_bucket_ok(bucket: str) -> bool:
    """`bucket`: 1 to 63 characters of a-zA-Z0-9_-."""
    return 1 <= len(bucket) <= 63 and all(character in BUCKET_ALPHABET for character in bucket)


def contract_key_ok(key: str) -> bool:
    """`key`: 1 to 1024 characters of a-zA-Z0-9_-/.; no leading '/', no empty, '.' or '..' segment."""
    if not 1 <= len(key) <= 1024:
        return False
    if any(character not in KEY_ALPHABET for character in key):
        return False
    if key[0] == "/":
        return False
    return all(segment not in ("", ".", "..") for segment in key.split("/"))


# --- strategies ---------------------------------------------------------------------------------

# Pieces an attacker reaches for: separators and dot segments (plain, percent-encoded and in
# Unicode forms that NFKC-normalise to '.' or '/'), NUL, fullwidth and case-folding look-alikes,
# combining marks, and the route's own ':content' suffix.
# fmt: off
HOSTILE = [
    "/", ".", "..", "./", "../", "/..", "//", "%2e", "%2e%2e", "%2E%2E", "%2F", "%2f", "%5C", "%00", "%",
    "\x00",
    # NFKC: FULLWIDTH FULL STOP, ONE DOT LEADER, SMALL FULL STOP -> '.', TWO DOT LEADER -> '..',
    # FULLWIDTH SOLIDUS -> '/'; DIVISION SLASH, FRACTION SLASH, BIG SOLIDUS only look like one.
    "\uff0e", "\u2024", "\ufe52", "\u2025", "\uff0f", "\u2215", "\u2044", "\u29f8",
    # fullwidth letters and digits, KELVIN SIGN, LONG S, dotted/dotless I, sharp s: fold or normalise to ASCII
    "\uff21", "\uff41", "\uff10", "\u212a", "\u017f", "\u0130", "\u0131", "\u00df",
    # combining marks, precomposed and decomposed accents, invisible characters, astral plane
    "\u0301", "\u0338", "e\u0301", "\u00e9", "\u200b", "\ufeff", "\U0001f600",
    " ", "\t", "\n", "\r", "\\", ":", ":content", "?", "#", "&", "~", "*", "'", '"', "<", "\x7f", "\x85", "\xa0",
]
# fmt: on
SAFE_CHARACTERS = sorted(KEY_ALPHABET)


def _segment() -> st.SearchStrategy[str]:
    return st.text(alphabet=sorted(KEY_ALPHABET - {"/"}), min_size=1, max_size=12)


def _insert(parts: tuple[str, str, int]) -> str:
    text, piece, position = parts
    position %= len(text) + 1
    return text[:position] + piece + text[position:]


def _names(valid: st.SearchStrategy[str], long_lengths: tuple[int, int]) -> st.SearchStrategy[str]:
    low, high = long_lengths
    return st.one_of(
        valid,
        st.tuples(valid, st.sampled_from(HOSTILE), st.integers(0, 2000)).map(_insert),
        st.lists(st.one_of(st.sampled_from(HOSTILE), st.sampled_from(SAFE_CHARACTERS)), max_size=30).map("".join),
        st.text(max_size=40),
        st.integers(low, high).map(lambda n: "k" * n),
        st.tuples(st.integers(low, high), st.sampled_from(["/", ".", "\uff0e", "a"])).map(lambda t: "a" * t[0] + t[1]),
    )


VALID_BUCKETS = st.text(alphabet=sorted(BUCKET_ALPHABET), min_size=1, max_size=63)
VALID_KEYS = st.lists(_segment().filter(lambda s: s not in (".", "..")), min_size=1, max_size=5).map("/".join)
BUCKETS = _names(VALID_BUCKETS, (60, 66))
KEYS = _names(VALID_KEYS, (1020, 1030))
# Text for URLs: anything but lone surrogates, which no URL can carry.
URL_BUCKETS = BUCKETS.filter(lambda text: not any(0xD800 <= ord(c) <= 0xDFFF for c in text))
URL_KEYS = KEYS.filter(lambda text: not any(0xD800 <= ord(c) <= 0xDFFF for c in text))


# --- looking at the volume --------------------------------------------------------------------


def tree(directory: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """Everything below `directory` (not following links): path -> (kind, content or link target, mtime ns)."""
    found: dict[str, tuple[str, bytes | str, int]] = {}
    if not directory.exists():
        return found
    for root, directories, files in os.walk(directory):
        for name in directories + files:
            path = Path(root, name)
            stat = path.lstat()
            relative = str(path.relative_to(directory))
            if path.is_symlink():
                found[relative] = ("link", os.readlink(path), stat.st_mtime_ns)
            elif path.is_dir():
                found[relative] = ("dir", b"", stat.st_mtime_ns)
            else:
                found[relative] = ("file", path.read_bytes(), stat.st_mtime_ns)
    return found


def files_below(directory: Path) -> list[Path]:
    """Every regular file below `directory`, not following links (not even `directory` itself)."""
    found = []
    if directory.is_symlink():
        return found
    for root, _, files in os.walk(directory):
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                found.append(path)
    return found


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def b3(data: bytes) -> str:
    return blake3(data).hexdigest()


def assert_volume_well_formed(tmp_path: Path, data_dir: Path) -> None:
    """Every file under the test's directory lies in the data directory, where the layout puts it.

    entries/<valid bucket>/<h[:2]>/<h>.json naming that bucket and a valid key hashing to h;
    blobs/<d[:2]>/<d[2:4]>/<d> holding content that hashes to d; partial/<32 hex>.
    """
    for path in files_below(tmp_path):
        assert path.is_relative_to(data_dir), f"{path} was written outside the data directory {data_dir}"
        parts = path.relative_to(data_dir).parts
        if parts[0] == "entries":
            assert len(parts) == 4, f"entry file at an unexpected depth: {path}"
            _, bucket, shard, name = parts
            entry = json.loads(path.read_bytes())
            hashed = sha256_hex(entry["key"])
            assert entry["bucket"] == bucket and contract_bucket_ok(bucket), path
            assert contract_key_ok(entry["key"]), path
            assert (shard, name) == (hashed[:2], f"{hashed}.json"), path
        elif parts[0] == "blobs":
            assert len(parts) == 4, f"blob at an unexpected depth: {path}"
            _, first, second, digest = parts
            assert (first, second) == (digest[:2], digest[2:4]) and b3(path.read_bytes()) == digest, path
        elif parts[0] == "partial":
            assert len(parts) == 2 and len(parts[1]) == 32 and set(parts[1]) <= set(string.hexdigits.lower()), path
        else:
            raise AssertionError(f"unexpected file in the data directory: {path}")


async def raw_request(app: Starlette, method: str, path: str) -> tuple[int, bytes]:
    """Call the app with a raw (already decoded) path; returns (status, body). A crash counts as 500."""
    sent: list[dict] = []
    delivered = False
    done = anyio.Event()

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    try:
        await app(asgi_scope(method, path), receive, send)
    except Exception:  # noqa: BLE001, S110 - the app re-raises after sending its 500: the status is what counts
        pass
    finally:
        done.set()
    starts = [message for message in sent if message["type"] == "http.response.start"]
    assert len(starts) == 1, f"{method} {path!r}: no single response start in {sent!r}"
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return starts[0]["status"], body


@pytest.fixture
def data_dir(settings) -> Path:
    return settings.data_dir


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the data directory; nothing may ever be written or read there."""
    directory = tmp_path / "outside"
    directory.mkdir()
    return directory


async def create(client: httpx.AsyncClient, bucket: str, key: str, size: int) -> httpx.Response:
    return await client.post("/v1/files", json={"bucket": bucket, "key": key, "mime_type": OCTETS, "size": size})


async def put_file(client: httpx.AsyncClient, bucket: str, key: str, content: bytes) -> httpx.Response:
    """A whole upload in one request; the response of the last step."""
    created = await create(client, bucket, key, len(content))
    if created.status_code != 200 or not content:
        return created
    return await client.post(f"/v1/files/session:{created.json()['id']}", content=content)


# --- (a) the name rules -----------------------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(name=st.one_of(BUCKETS, KEYS, st.text(alphabet=st.characters(codec=None), max_size=20)))
@example(name="\ud800")
@example(name="a/\uff0e\uff0e/b")
@example(name="\u2024\u2024")
@example(name="%2e%2e")
@example(name="a%2Fb")
@example(name="a\x00")
@example(name="\uff41")
@example(name="a" * 1024)
@example(name="a" * 1025)
@example(name="a/" * 511 + "b")
def test_name_rules_are_the_contracts(name: str) -> None:
    assert (names.bucket_error(name) is None) == contract_bucket_ok(name), name
    assert (names.key_error(name) is None) == contract_key_ok(name), name
    if names.key_error(name) is None or names.bucket_error(name) is None:
        # Nothing accepted can change under Unicode normalisation or look like a path step elsewhere.
        assert name.isascii() and unicodedata.normalize("NFKC", name) == name
        assert os.path.normpath(name) == name.rstrip("/") and not os.path.isabs(name)


# --- (b) names never lead out of the data directory -----------------------------------------------


@HTTP_SETTINGS
@given(bucket=URL_BUCKETS, key=URL_KEYS, content=st.binary(max_size=40))
@example(bucket="..", key="x", content=b"x")
@example(bucket="b", key="../../outside/x", content=b"x")
@example(bucket="b", key="%2e%2e/%2e%2e/outside/x", content=b"x")
@example(bucket="b", key="\uff0e\uff0e/\uff0e\uff0e/outside", content=b"x")
@example(bucket="b", key="a/\u2024\u2024/x", content=b"x")
@example(bucket="b", key="a\x00/x", content=b"x")
@example(bucket="b", key="...", content=b"dots")
@example(bucket="b", key=".a/..b/c.", content=b"dots")
async def test_posted_names_stay_inside_the_data_directory(
    client, app, redis, tmp_path, data_dir, outside, bucket, key, content
) -> None:
    keys_before = set(await redis.keys("*"))
    files_before = {str(path) for path in files_below(tmp_path)}
    response = await put_file(client, bucket, key, content)
    if not (contract_bucket_ok(bucket) and contract_key_ok(key)):
        assert response.status_code == 400, response.text
        assert response.json()["detail"]
        assert {str(path) for path in files_below(tmp_path)} == files_before, "a refused name stored something"
        assert set(await redis.keys("*")) == keys_before, "a refused name left something in Redis"
    else:
        assert response.status_code == 200, response.text
        assert (response.json()["bucket"], response.json()["key"]) == (bucket, key)
        entry_path = app.state.services.entries.path(bucket, key)
        assert entry_path.is_relative_to(data_dir.resolve() / "entries" / bucket)
        assert entry_path.is_file() and json.loads(entry_path.read_bytes())["key"] == key
        path = f"/v1/files/{quote(bucket, safe='')}/{quote(key, safe='/')}"
        info = await client.get(path)
        assert info.status_code == 200 and info.json()["key"] == key, info.text
        download = await client.get(f"{path}:content")
        assert download.status_code == 200 and download.content == content
    assert tree(outside) == {}
    assert_volume_well_formed(tmp_path, data_dir.resolve())


KEEP = ("keep", "precious/file.txt", b"precious content")


@HTTP_SETTINGS
@given(
    bucket=st.one_of(st.just("keep"), URL_BUCKETS),
    key=st.one_of(
        st.just("precious/file.txt"),
        URL_KEYS,
        st.sampled_from(
            [
                "precious/./file.txt",
                "x/../precious/file.txt",
                "precious//file.txt",
                "precious/file.txt/",
                "/precious/file.txt",
            ]
        ),
    ),
    method=st.sampled_from(["GET", "HEAD", "DELETE"]),
    target=st.sampled_from(["info", "content", "list"]),
    transport=st.sampled_from(["raw", "quoted", "quoted-all"]),
)
@example(bucket="keep", key="precious/./file.txt", method="DELETE", target="info", transport="raw")
@example(bucket="keep", key="x/../precious/file.txt", method="GET", target="content", transport="raw")
@example(bucket="keep", key="precious%2Ffile.txt", method="GET", target="info", transport="quoted")
@example(bucket="keep", key="precious/file.txt", method="GET", target="info", transport="quoted-all")
@example(bucket="..", key="outside/x", method="GET", target="content", transport="raw")
async def test_url_paths_stay_inside_the_data_directory(
    client, app, tmp_path, data_dir, outside, bucket, key, method, target, transport
) -> None:
    if (await client.get(f"/v1/files/{KEEP[0]}/{KEEP[1]}")).status_code == 404:
        assert (await put_file(client, *KEEP)).status_code == 200
    path = f"/v1/files/{bucket}" if target == "list" else f"/v1/files/{bucket}/{key}"
    if target == "content":
        path += ":content"
    if transport == "raw":
        status, body = await raw_request(app, method, path)
    else:
        safe = "/:" if transport == "quoted" else ""
        encoded = "/v1/files/" + quote(path.removeprefix("/v1/files/"), safe=safe)
        transport_ = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport_, base_url=BASE_URL) as raw_client:
            response = await raw_client.request(method, httpx.URL(BASE_URL + encoded))
        status, body = response.status_code, response.content
        path = httpx.URL(BASE_URL + encoded).path  # what the service sees, decoded
    assert status < 500, f"{method} {path!r} -> {status} {body[:300]!r}"
    assert status in (200, 307, 400, 404, 405), f"{method} {path!r} -> {status} {body[:300]!r}"
    # What the path names, read as the router must: /v1/files/<bucket>[/<key>[:content]].
    rest = path.removeprefix("/v1/files/")
    named_bucket, slash, named_key = rest.partition("/")
    named_key = named_key.removesuffix(":content") if target == "content" else named_key
    names_keep = (named_bucket, named_key) == KEEP[:2] and slash == "/"
    if status == 200 and target != "list":
        assert names_keep, f"{method} {path!r} answered 200 for a file that was never stored"
        if method == "GET" and target == "content":
            assert body == KEEP[2]
        elif method != "HEAD":
            assert json.loads(body)["key"] == KEEP[1]
    if status == 200 and target == "list" and method == "GET":
        assert contract_bucket_ok(named_bucket) and not slash
    exists = (await client.get(f"/v1/files/{KEEP[0]}/{KEEP[1]}")).status_code == 200
    assert exists or (method == "DELETE" and target == "info" and names_keep and status == 200)
    assert tree(outside) == {}
    assert_volume_well_formed(tmp_path, data_dir.resolve())


# --- (b) planted symbolic links are never followed --------------------------------------------------

PLANTS = [
    "bucket-dir",  # entries/<bucket> -> outside
    "entry-shard",  # entries/<bucket>/<h[:2]> -> outside
    "entries-root",  # entries -> outside
    "entry-file",  # entries/<bucket>/<h[:2]>/<h>.json -> outside/target
    "partial-file",  # partial/<id> -> outside/target
    "partial-dangling",  # partial/<id> -> outside/new (does not exist)
    "partial-root",  # partial -> outside
    "blob-shard",  # blobs/<d[:2]> -> outside
    "blob-file",  # blobs/<d[:2]>/<d[2:4]>/<d> -> outside/target (same size as the content)
    "blobs-root",  # blobs -> outside
]


ENTRY_PLANTS = {"bucket-dir", "entry-shard", "entries-root", "entry-file"}


class Planted:
    """A symbolic link planted at `link`; what it displaced waits in `aside` and is put back on exit."""

    def __init__(self, link: Path, target: Path, aside: Path) -> None:
        self.link = link
        self.target = target
        self.aside = aside
        self.displaced = False

    def __enter__(self) -> Self:
        if self.link.is_symlink():
            self.link.unlink()
        elif self.link.exists():
            self.aside.parent.mkdir(parents=True, exist_ok=True)
            self.link.rename(self.aside)
            self.displaced = True
        self.link.parent.mkdir(parents=True, exist_ok=True)
        self.link.symlink_to(self.target)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.link.is_symlink():
            self.link.unlink()
            if self.displaced:
                self.aside.rename(self.link)
        elif self.displaced:
            # The service replaced the link with a real file of its own (newer than the one set aside).
            shutil.rmtree(self.aside) if self.aside.is_dir() else self.aside.unlink()


def planted_entry(bucket: str, key: str, content: bytes) -> bytes:
    entry = {
        "bucket": bucket,
        "key": key,
        "mime_type": OCTETS,
        "bytes": len(content),
        "created_at": 1,
        "digest": b3(content),
    }
    return json.dumps(entry).encode()


def referenced_digests(data_dir: Path) -> set[str]:
    return {json.loads(path.read_bytes())["digest"] for path in files_below(data_dir / "entries")}


async def forget_index(redis) -> None:
    """Drop the listing index and the references, so that the next listing rebuilds them from the volume alone."""
    stale = await redis.keys("files:index:*") + await redis.keys("files:refs:*")
    if stale:
        await redis.delete(*stale)


@settings(
    max_examples=len(PLANTS) * 8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plant=st.sampled_from(PLANTS),
    bucket=VALID_BUCKETS,
    key=VALID_KEYS,
    content=st.binary(min_size=1, max_size=64),
)
@example(plant="blob-file", bucket="b", key="k", content=b"blob")
@example(plant="entry-file", bucket="b", key="k", content=b"entry")
@example(plant="bucket-dir", bucket="b", key="k", content=b"bucket")
@example(plant="partial-file", bucket="b", key="k", content=b"partial")
async def test_planted_links_are_not_followed(
    app, redis, tmp_path, data_dir, outside, plant, bucket, key, content
) -> None:
    for stale in outside.iterdir():  # a dangling link target created by an earlier example must not count
        stale.unlink()
    (outside / "target").write_bytes(b"T" * len(content))  # same size: a blob store may take it for the blob
    (outside / "target.json").write_bytes(planted_entry(bucket, key, content))
    for name in ("target", "target.json"):
        os.utime(outside / name, ns=(10**18, 10**18))
    before = tree(outside)
    data = data_dir.resolve()
    hashed, digest = sha256_hex(key), b3(content)
    had_entry = (data / "entries" / bucket / hashed[:2] / f"{hashed}.json").is_file()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        created = await create(client, bucket, key, len(content))
        assert created.status_code == 200, created.text
        session = created.json()["id"]
        link, target = {
            "bucket-dir": (data / "entries" / bucket, outside),
            "entry-shard": (data / "entries" / bucket / hashed[:2], outside),
            "entries-root": (data / "entries", outside),
            "entry-file": (data / "entries" / bucket / hashed[:2] / f"{hashed}.json", outside / "target.json"),
            "partial-file": (data / "partial" / session, outside / "target"),
            "partial-dangling": (data / "partial" / session, outside / "new"),
            "partial-root": (data / "partial", outside),
            "blob-shard": (data / "blobs" / digest[:2], outside),
            "blob-file": (data / "blobs" / digest[:2] / digest[2:4] / digest, outside / "target"),
            "blobs-root": (data / "blobs", outside),
        }[plant]
        blobs_before = {path.name for path in files_below(data / "blobs")}
        with Planted(link, target, tmp_path / "aside" / plant):
            looked = await client.get(f"/v1/files/{bucket}/{key}")
            if plant in ENTRY_PLANTS or not had_entry:
                assert looked.status_code != 200, f"a file was read through {plant}: {looked.text}"
            await forget_index(redis)
            listing = await client.get(f"/v1/files/{bucket}")
            if plant == "entries-root":
                # The whole entry directory is a link: the service refuses to use it (and reads nothing there).
                assert listing.status_code == 500, (plant, listing.text)
            else:
                assert listing.status_code == 200, (plant, listing.text)
                listed = key in [item["key"] for item in listing.json()["data"]]
                assert listed == (had_entry and plant not in ENTRY_PLANTS), (
                    f"{plant}: listed {listed}, stored {had_entry}"
                )
            sent = await client.post(f"/v1/files/session:{session}", content=content)
            assert tree(outside) == before, f"something was written through {plant}"
            if sent.status_code == 200:
                # The service put a real file in place of the link: it must serve the content from inside.
                download = await client.get(f"/v1/files/{bucket}/{key}:content")
                assert download.status_code == 200 and download.content == content, (plant, download.status_code)
            else:
                assert sent.status_code >= 400, sent.text
                left = {path.name for path in files_below(data / "blobs")}
                assert left <= blobs_before | referenced_digests(data), f"{plant}: a blob was left without its entry"
        await forget_index(redis)  # built while the link hid entries: rebuild it from the whole volume
        assert tree(outside) == before, f"something was written through {plant}"
        if sent.status_code != 200:
            # Without the link the same session resumes from the offset it reports, and completes.
            status = await client.get(f"/v1/files/session:{session}")
            assert status.status_code == 200, status.text
            offset = status.json()["offset"]
            resumed = await client.post(
                f"/v1/files/session:{session}", content=content[offset:], headers={"Upload-Offset": str(offset)}
            )
            assert resumed.status_code == 200, (plant, resumed.text)
        download = await client.get(f"/v1/files/{bucket}/{key}:content")
        assert download.status_code == 200 and download.content == content, plant
    assert tree(outside) == before
    assert_volume_well_formed(data, data)


# --- (c) Upload-Offset ---------------------------------------------------------------------------

MAX_HEADER_DIGITS = 4000  # longer numbers are refused with 400 (see _header_int); none is an offset


def contract_offset(raw: bytes) -> bytes | None:
    """The digits of the offset a header value names (no leading zeros), or None when it is not a
    plain non-negative decimal integer.

    HTTP strips optional whitespace (SP, HTAB) around a field value; nothing else is allowed.
    """
    stripped = raw.strip(b" \t")
    if not stripped or any(byte not in b"0123456789" for byte in stripped):
        return None
    return stripped.lstrip(b"0") or b"0"


def _padded(parts: tuple[str, str, str]) -> bytes:
    return "".join(parts).encode("latin-1")


OWS = st.text(alphabet=" \t", max_size=2)
OFFSET_HEADERS = st.one_of(
    st.tuples(OWS, st.integers(0, 12).map(str), OWS).map(_padded),
    st.tuples(st.just(""), st.integers(0, 10**30).map(str), st.just("")).map(_padded),
    st.tuples(st.text("0", max_size=3), st.integers(0, 12).map(str), st.just("")).map(lambda t: (t[0] + t[1]).encode()),
    st.sampled_from(
        [
            b"",
            b" ",
            b"-1",
            b"-0",
            b"+1",
            b"1.0",
            b"1e1",
            b"0x1",
            b"1_0",
            b"1,2",
            b"1 2",
            b"\xd9\xa3",
            b"\xb2",
            b"\xef\xbc\x95",
            b"5\x85",
            b"\xa05",
            b"5\x0b",
            b"\x1c5",
            b"NaN",
            b"inf",
            b"0b1",
            b"one",
            b"1;",
            b"=1",
        ]
    ),
    st.binary(max_size=8).filter(lambda raw: b"\r" not in raw and b"\n" not in raw),
)


@HTTP_SETTINGS
@given(header=OFFSET_HEADERS, offset=st.integers(0, 11), size=st.integers(1, 12))
@example(header=b"3", offset=3, size=5)
@example(header=b"9" * 5000, offset=0, size=5)
@example(header=b"0" * 5000 + b"2", offset=2, size=5)
async def test_upload_offset_is_a_plain_integer(client, app, data_dir, header, offset, size) -> None:
    offset = min(offset, size - 1)
    content = bytes(range(size))
    session = (await create(client, "b", "offsets", size)).json()["id"]
    url = f"/v1/files/session:{session}"
    if offset:
        assert (await client.post(url, content=content[:offset], headers={"Upload-Offset": "0"})).status_code == 200
    staging = app.state.services.staging.path(session)
    blobs_before = files_below(data_dir / "blobs")
    response = await client.post(url, content=content[offset : offset + 1], headers={"Upload-Offset": header})
    named = contract_offset(header)
    if named is None or len(named) > MAX_HEADER_DIGITS:
        assert response.status_code == 400, (header, response.status_code, response.text)
        assert response.json()["detail"]
        expected = offset
    elif named != str(offset).encode():
        assert response.status_code == 409, (header, response.text)
        assert response.json()["offset"] == offset
        assert response.headers["upload-offset"] == str(offset)
        expected = offset
    else:
        assert response.status_code == 200, (header, response.text)
        expected = offset + 1
    state = await client.get(url)
    if expected < size:
        assert state.json()["offset"] == expected
        held = staging.read_bytes() if staging.exists() else b""
        assert held == content[:expected], "the staging file holds other bytes than acknowledged"
        assert files_below(data_dir / "blobs") == blobs_before
    else:
        assert response.json()["bytes"] == size


@HTTP_SETTINGS
@given(header=OFFSET_HEADERS)
async def test_content_length_is_a_plain_integer(app, header) -> None:
    """A Content-Length that is no plain integer (ASGI passes it through as sent) is a 400, not a 500."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        session = (await create(client, "b", "lengths", 5)).json()["id"]
        response = await client.post(f"/v1/files/session:{session}", content=b"", headers={"Content-Length": header})
    assert response.status_code in (200, 400, 413), (header, response.status_code, response.text)
    if contract_offset(header) is None:
        assert response.status_code == 400, (header, response.request.headers.raw)


# --- (d) Range ------------------------------------------------------------------------------------

WHOLE = "whole"
UNSATISFIABLE = "unsatisfiable"


def contract_range(header: str | None, size: int) -> str | tuple[int, int]:
    """What `Range: <header>` asks of a `size`-byte file, by RFC 9110 §14 and the contract.

    One `bytes=first-last`, `bytes=first-` or `bytes=-suffix` (unit case-insensitive; the service
    also tolerates SP/HTAB around the numbers and the dash). Anything else, a list of ranges or
    last < first is not one valid range: the header is ignored and the whole file is sent.
    A valid range is unsatisfiable when first >= size, or for a zero suffix or an empty file.
    """
    if header is None:
        return WHOLE
    text = header.strip(" \t")
    if not (text[:6].isascii() and text[:6].lower() == "bytes="):
        return WHOLE
    rest = text[6:]
    position = 0

    def skip_ows() -> None:
        nonlocal position
        while position < len(rest) and rest[position] in " \t":
            position += 1

    def digits() -> str:
        nonlocal position
        start = position
        while position < len(rest) and rest[position] in ASCII_DIGITS:
            position += 1
        return rest[start:position]

    skip_ows()
    first_text = digits()
    skip_ows()
    if position == len(rest) or rest[position] != "-":
        return WHOLE
    position += 1
    skip_ows()
    last_text = digits()
    skip_ows()
    if position != len(rest) or (not first_text and not last_text):
        return WHOLE
    if first_text:
        first = exact_int(first_text)
        if last_text and exact_int(last_text) < first:
            return WHOLE
        if first >= size:
            return UNSATISFIABLE
        last = exact_int(last_text) if last_text else size - 1
        return first, min(last, size - 1)
    suffix = exact_int(last_text)
    if suffix == 0 or size == 0:
        return UNSATISFIABLE
    return max(0, size - suffix), size - 1


def exact_int(digits: str) -> int:
    """int(digits) for any length (int() refuses strings of over 4300 digits)."""
    value = 0
    for start in range(0, len(digits), 1000):
        part = digits[start : start + 1000]
        value = value * 10 ** len(part) + int(part)
    return value


def _number() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(0, 70).map(str),
        st.integers(0, 10**25).map(str),
        st.integers(0, 5).map(lambda n: "0" * n + "7"),
        st.just(""),
    )


def _spec(parts: tuple) -> str:
    unit, pad, first, mid1, mid2, last, tail = parts
    return f"{unit}={pad}{first}{mid1}-{mid2}{last}{tail}"


RANGE_HEADERS = st.one_of(
    st.tuples(
        st.sampled_from(["bytes", "BYTES", "Bytes", "byte", "bits", "items", " bytes", "bytes "]),
        OWS,
        _number(),
        OWS,
        OWS,
        _number(),
        st.sampled_from(["", "", "", " ", ",", ", 5-6", ",-1", "x", "-", "\xa0", "\x85"]),
    ).map(_spec),
    st.tuples(st.sampled_from(["", " ", "\t"]), _number(), _number()).map(lambda t: f"{t[0]}bytes={t[1]}-{t[2]}"),
    st.sampled_from(
        [
            "",
            "bytes=",
            "bytes=-",
            "bytes=--1",
            "bytes=1--2",
            "bytes=-1-",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=0x1-2",
            "bytes=1.5-2",
            "bytes=\u0661-\u0662",
            "bytes=\uff11-\uff12",
            "byte\u017f=0-1",
            "bytes=0-1,2-3",
            "bytes=0-0",
            "bytes=-0",
            "bytes=0-",
            "bytes= 1 - 2 ",
            "bytes=\xb2-3",
            "bytes=1 2-3",
        ]
    ),
    st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=16),
    st.text(alphabet="bytes=0123456789- ,\t", max_size=16),
)
SIZES = [0, 1, 2, 3, 10, 64]


@settings(max_examples=2000, deadline=None)
@given(header=RANGE_HEADERS, size=st.one_of(st.sampled_from(SIZES), st.integers(0, 10**12)))
@example(header="bytes=" + "9" * 5000 + "-", size=10)
@example(header="bytes=0-" + "9" * 5000, size=10)
@example(header="bytes=-" + "9" * 5000, size=10)
@example(header="bytes=" + "9" * 5000 + "-" + "8" * 5000, size=10)
@example(header="bytes=" + "0" * 5000 + "3-4", size=10)
def test_parse_range_is_the_reference(header: str, size: int) -> None:
    expected = contract_range(header, size)
    try:
        span = parse_range(header, size)
    except RangeNotSatisfiable:
        assert expected == UNSATISFIABLE, (header, size, expected)
        return
    if span is None:
        assert expected == WHOLE, (header, size, expected)
    else:
        first, last = span
        assert 0 <= first <= last < size
        assert expected == (first, last), (header, size, expected)


@pytest.fixture
async def sized_files(client) -> dict[int, bytes]:
    stored = {}
    for size in SIZES:
        content = os.urandom(size)
        response = await put_file(client, "ranges", f"size-{size}", content)
        assert response.status_code == 200, response.text
        stored[size] = content
    return stored


@HTTP_SETTINGS
@given(header=RANGE_HEADERS, size=st.sampled_from(SIZES), method=st.sampled_from(["GET", "HEAD"]))
@example(header="bytes=" + "9" * 5000 + "-", size=10, method="GET")
@example(header="bytes=-" + "9" * 5000, size=10, method="GET")
async def test_ranged_downloads_are_the_reference_slice(client, sized_files, header, size, method) -> None:
    content = sized_files[size]
    raw = header.encode()  # as a client sends it: UTF-8 bytes, which the service reads as ISO-8859-1
    response = await client.request(method, f"/v1/files/ranges/size-{size}:content", headers={"Range": raw})
    expected = contract_range(raw.decode("latin-1"), size)
    body = response.content if method == "GET" else None
    if expected == WHOLE:
        assert response.status_code == 200, (header, response.status_code)
        assert "content-range" not in response.headers
        assert int(response.headers["content-length"]) == size
        assert body in (None, content)
    elif expected == UNSATISFIABLE:
        assert response.status_code == 416, (header, response.status_code)
        assert response.headers["content-range"] == f"bytes */{size}"
    else:
        first, last = expected
        assert response.status_code == 206, (header, response.status_code)
        assert response.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert int(response.headers["content-length"]) == last - first + 1
        assert body in (None, content[first : last + 1])
    if method == "HEAD":
        assert response.content == b""
