"""Logging: one JSON object per line (or plain text), for the service and for uvicorn alike."""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Stamps every record made while a request is served with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JSONFormatter(JsonFormatter):
    """python-json-logger's lines with our field names: time (UTC, milliseconds), level, logger, message,
    then every `extra=` field that is set, and `exception` with its traceback."""

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "exc_info": "exception"},
            # uvicorn's `color_message` is the message again, with terminal colours.
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
            json_default=str,
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        log_data["level"] = log_data["level"].lower()
        return {key: value for key, value in log_data.items() if value is not None}


def logging_config(level: str, format: str) -> dict:
    """A `logging.config.dictConfig` for the service and uvicorn; uvicorn applies it in every worker."""
    formatter = (
        {"()": JSONFormatter} if format == "json" else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"request_id": {"()": RequestIdFilter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["request_id"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            # One line per request comes from service.http.observe instead.
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
        },
    }
