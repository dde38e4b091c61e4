"""The JSON log line: its fields, as a log collector reads them."""

from __future__ import annotations

import json
import logging
import re

from service.ops.logs import JSONFormatter, RequestIdFilter, request_id


def formatted(level: int, message: str, *args: object, exc_info: object = None, **extra: object) -> dict:
    record = logging.getLogger("files.test").makeRecord(
        "files.test", level, __file__, 1, message, args, exc_info, extra=extra
    )
    RequestIdFilter().filter(record)
    line = JSONFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def test_a_line_has_time_level_logger_message_and_the_extra_fields() -> None:
    token = request_id.set("r-1")
    try:
        line = formatted(logging.INFO, "%s %d", "GET", 200, event="request", status=200, route=None)
    finally:
        request_id.reset(token)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("time"))
    # `route` is None: left out, as is everything a LogRecord has of its own.
    assert line == {
        "level": "info",
        "logger": "files.test",
        "message": "GET 200",
        "event": "request",
        "status": 200,
        "request_id": "r-1",
    }


def test_an_exception_comes_with_its_traceback_and_no_colour_copy() -> None:
    try:
        raise ValueError("broken entry")
    except ValueError as error:
        exc_info = (type(error), error, error.__traceback__)
    line = formatted(logging.ERROR, "failed", exc_info=exc_info, color_message="\x1b[31mfailed\x1b[0m")
    assert line["level"] == "error" and "request_id" not in line and "color_message" not in line
    assert line["exception"].startswith("Traceback") and "ValueError: broken entry" in line["exception"]
