"""Settings from the environment: what a bad value says, and where the values come from."""

from __future__ import annotations

import pytest
from clirun import run_cli

from service.config import ConfigError, Settings


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FILES_SESSION_TTL_SECONDS": "x"}, "FILES_SESSION_TTL_SECONDS must be a int, got 'x'"),
        ({"FILES_MAX_OPEN_SESSIONS": "1.5"}, "FILES_MAX_OPEN_SESSIONS must be a int, got '1.5'"),
        ({"FILES_LOCK_LEASE_SECONDS": "abc"}, "FILES_LOCK_LEASE_SECONDS must be a float, got 'abc'"),
        ({"FILES_SESSION_TTL_SECONDS": "0"}, "FILES_SESSION_TTL_SECONDS must be at least 1, got '0'"),
        ({"FILES_MAX_JSON_BYTES": "10"}, "FILES_MAX_JSON_BYTES must be at least 1024, got '10'"),
        ({"FILES_BLOB_GRACE_SECONDS": "-1"}, "FILES_BLOB_GRACE_SECONDS must be at least 0, got '-1'"),
        ({"FILES_LOCK_LEASE_SECONDS": "31"}, "FILES_LOCK_LEASE_SECONDS must be between 1 and 30, got '31'"),
        (
            {"FILES_SWEEP_INTERVAL_SECONDS": "0.01"},
            "FILES_SWEEP_INTERVAL_SECONDS must be between 0.1 and 30, got '0.01'",
        ),
        (
            {"FILES_LOG_LEVEL": "LOUD"},
            "FILES_LOG_LEVEL must be one of debug, info, warning, error, critical, got 'LOUD'",
        ),
        ({"FILES_LOG_FORMAT": "xml"}, "FILES_LOG_FORMAT must be one of json, text, got 'xml'"),
    ],
)
def test_a_bad_value_is_one_line_that_names_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ)
    assert str(raised.value) == message


def test_choices_ignore_case_and_empty_variables_are_unset() -> None:
    settings = Settings.from_env(
        {"FILES_LOG_LEVEL": "DEBUG", "FILES_LOG_FORMAT": "Text", "FILES_DATA_DIR": "", "FILES_MAX_JSON_BYTES": ""}
    )
    assert (settings.log_level, settings.log_format) == ("debug", "text")
    assert (settings.data_dir, settings.max_json_bytes) == (Settings().data_dir, Settings().max_json_bytes)


def test_cors_origins_and_public_url_are_plain_text_not_json() -> None:
    settings = Settings.from_env(
        {"FILES_CORS_ORIGINS": "https://a.example/, ,https://b.example", "FILES_PUBLIC_URL": "https://f.example/"}
    )
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.public_url == "https://f.example"
    assert Settings.from_env({"FILES_CORS_ORIGINS": "*"}).cors_origins == ("*",)


def test_only_from_env_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The constructor takes its arguments and defaults only, so a test's settings do not depend on the shell's."""
    monkeypatch.setenv("FILES_MAX_JSON_BYTES", "2048")
    monkeypatch.setenv("FILES_URL", "http://client.example")  # the client's variable, not a setting
    assert Settings().max_json_bytes == 64 * 1024
    assert Settings.from_env().max_json_bytes == 2048
    assert Settings.from_env({}).max_json_bytes == 64 * 1024


def test_a_bad_value_stops_serve_with_status_2_and_no_traceback(tmp_path) -> None:
    result = run_cli("serve", "--port", "0", env={"FILES_LOCK_LEASE_SECONDS": "0", "FILES_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip() == "files-service: FILES_LOCK_LEASE_SECONDS must be between 1 and 30, got '0'"
