"""The name rules of the contract, one table each."""

import pytest

from service.core.names import bucket_error, digest_error, key_error, mime_type_error

GOOD_KEYS = ["a", "a/b", "a.b", "a/b/c.tar.gz", "...a", "a..b", ".hidden", "x" * 1024, "A-Z_0-9/..x/y."]
BAD_KEYS = [
    "",
    "/a",
    "a//b",
    "a/",
    ".",
    "..",
    "a/./b",
    "a/../b",
    "../a",
    "a/..",
    "x" * 1025,
    "a b",
    "a\\b",
    "é",
    "a\x00b",
    "a:b",
    "a%2Fb",
    "a?b",
]


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_good_keys(key):
    assert key_error(key) is None


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys(key):
    assert key_error(key) is not None


@pytest.mark.parametrize("bucket", ["a", "A-b_9", "x" * 63, "-", "_"])
def test_good_buckets(bucket):
    assert bucket_error(bucket) is None


@pytest.mark.parametrize("bucket", ["", "x" * 64, "a.b", "a/b", "a b", "é", "..", "a\n"])
def test_bad_buckets(bucket):
    assert bucket_error(bucket) is not None


@pytest.mark.parametrize(
    "mime_type",
    [
        "application/octet-stream",
        "image/jpg",
        "text/plain; charset=utf-8",
        "application/vnd.api+json",
        'text/x; a="b c"',
    ],
)
def test_good_media_types(mime_type):
    assert mime_type_error(mime_type) is None


@pytest.mark.parametrize(
    "mime_type", ["", "text", "text/", "/plain", "text/plain/x", "te xt/plain", "text/plain;", "text/pl\nain", "ü/x"]
)
def test_bad_media_types(mime_type):
    assert mime_type_error(mime_type) is not None


def test_digests():
    assert digest_error("blake3:" + "a" * 64) is None
    assert digest_error("sha256:" + "F" * 64) is None
    for bad in ["blake3:" + "a" * 63, "md5:" + "a" * 64, "a" * 64, "sha256:" + "g" * 64, "blake3:" + "a" * 65]:
        assert digest_error(bad) is not None
