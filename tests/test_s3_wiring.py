"""FILES_STORAGE_URL: the object store chosen at start, and a clear line when its bucket cannot be used."""

from __future__ import annotations

import botocore.session
import pytest
from clirun import run_cli
from integration.harness import free_port
from s3server import CREDENTIALS, S3Server

from service.config import ConfigError, Settings
from service.storage.leanmodels import lean_session
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


def test_an_endpoint_that_does_not_answer_is_one_clear_config_error(monkeypatch: pytest.MonkeyPatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="cannot use S3 bucket 'files': Could not connect to the endpoint URL"):
        object_store("s3://files", f"http://127.0.0.1:{free_port()}")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_with_a_missing_bucket_says_so_in_one_line_before_any_worker_starts(
    s3_server: S3Server, shared_redis_url: str, workers: str
):
    env = {"FILES_STORAGE_URL": "s3://no-such-bucket", "FILES_S3_ENDPOINT_URL": s3_server.url, **CREDENTIALS}
    env["FILES_REDIS_URL"] = shared_redis_url
    result = run_cli("serve", "--port", str(free_port()), "--workers", workers, env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "files-service: FILES_STORAGE_URL=s3://no-such-bucket: cannot use S3 bucket 'no-such-bucket': no such bucket"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1"])
@pytest.mark.parametrize("service", ["s3", "sts"])
def test_the_lean_models_resolve_as_botocores_own(service: str, region: str):
    """The models loaded lean (service/storage/leanmodels.py) reach the same endpoints, with the same
    signing, as botocore's stock loading: only their documentation and other services are left out."""
    lean = lean_session().create_client(service, region_name=region)  # type: ignore[call-overload]
    stock = botocore.session.get_session().create_client(service, region_name=region)  # type: ignore[call-overload]
    assert lean.meta.service_model.documentation == "" != stock.meta.service_model.documentation
    assert lean.meta.endpoint_url == stock.meta.endpoint_url
    assert lean.meta.region_name == stock.meta.region_name
    assert lean.meta.service_model.signing_name == stock.meta.service_model.signing_name
    assert lean.meta.config.signature_version == stock.meta.config.signature_version
