"""botocore's model files loaded lean: plain dicts, their documentation left out.

botocore reads each JSON model (the endpoints of every AWS service, S3's API and its endpoint rules)
into OrderedDicts with every documentation string, and keeps them for the life of the client: about
11 MiB in the service, for text that only a generated docstring would show. Loaded as plain dicts
(ordered too, since Python 3.7) with each "documentation" value emptied (the key stays: botocore reads
some, such as a client context parameter's), they take about 6 MiB. Nothing else changes: the same
files, from the same search paths (AWS_DATA_PATH included).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import IO, Any

import botocore.session
from botocore.loaders import JSONFileLoader

log = logging.getLogger("files.storage")


def _undocumented(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {key: "" if key == "documentation" else value for key, value in pairs}


class LeanJSONFileLoader(JSONFileLoader):
    """JSONFileLoader with a lean decoding; the rest (extensions, gzip, search paths) is botocore's."""

    def _load_file(self, full_path: str, open_method: Callable[..., IO[bytes]]) -> dict[str, Any] | None:
        if not os.path.isfile(full_path):
            return None
        with open_method(full_path, "rb") as file:
            payload = file.read().decode("utf-8")
        log.debug("loading botocore model %s", full_path)
        model: dict[str, Any] = json.loads(payload, object_pairs_hook=_undocumented)
        return model


def lean_session() -> botocore.session.Session:
    """A botocore session (credentials and region from the usual AWS_* variables) whose models load lean."""
    session = botocore.session.get_session()
    session.get_component("data_loader").file_loader = LeanJSONFileLoader()
    return session
