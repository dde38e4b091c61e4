"""FILES_STORAGE_URL: the object store chosen at start, and a clear line when its bucket cannot be used."""

from __future__ import annotations

import pytest
from s3server import CREDENTIALS, S3Server

from service.config import ConfigError, Settings
from service.storage.s3 import object_store


def test_a_missing_bucket_is_one_clear_config_error(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="cannot use S3 bucket 'no-such-bucket'"):
        object_store("s3://no-such-bucket/files", s3_server.url)


def test_the_storage_url_names_a_bucket_and_a_prefix(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.new_bucket()
    location = object_store(f"s3://{bucket}/some/prefix", s3_server.url)
    assert (location.bucket, location.prefix) == (bucket, "some/prefix/")
    with pytest.raises(ConfigError, match="FILES_STORAGE_URL"):
        Settings.from_env({"FILES_STORAGE_URL": "http://bucket"})
