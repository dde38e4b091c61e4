"""botocore's model files loaded lean: plain dicts, their documentation and other services left out.

botocore reads each JSON model (the endpoints of every AWS service, S3's API and its endpoint rules)
into OrderedDicts with every documentation string, and keeps them for the life of the client: about
11 MiB in the service, for text that only a generated docstring would show and some 300 services it
never calls. Loaded as plain dicts (ordered too, since Python 3.7) with each "documentation" value
emptied (the key stays: botocore reads some, such as a client context parameter's), and the endpoints
of S3 and STS only (STS: the credential providers that assume a role call it), they take about 2 MiB.
A service left out would still resolve, from its partition's defaults, as botocore resolves a service
newer than its endpoints file. Otherwise nothing changes: the same files, from the same search paths
(AWS_DATA_PATH included).
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


ENDPOINTS = "endpoints.json"
SERVICES = frozenset({"s3", "sts"})  # the endpoints kept


def _undocumented(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {key: "" if key == "documentation" else value for key, value in pairs}


def _endpoints_used(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A partition of endpoints.json with the services used only; every other object as it is."""
    found = dict(pairs)
    if "partition" in found and isinstance(found.get("services"), dict):
        found["services"] = {name: found["services"][name] for name in SERVICES if name in found["services"]}
    return found


class LeanJSONFileLoader(JSONFileLoader):
    """JSONFileLoader with a lean decoding; the rest (extensions, gzip, search paths) is botocore's."""

    def _load_file(self, full_path: str, open_method: Callable[..., IO[bytes]]) -> dict[str, Any] | None:
        if not os.path.isfile(full_path):
            return None
        with open_method(full_path, "rb") as file:
            payload = file.read().decode("utf-8")
        log.debug("loading botocore model %s", full_path)
        lean = _endpoints_used if os.path.basename(full_path) == ENDPOINTS else _undocumented
        model: dict[str, Any] = json.loads(payload, object_pairs_hook=lean)
        return model


def lean_session() -> botocore.session.Session:
    """A botocore session (credentials and region from the usual AWS_* variables) whose models load lean."""
    session = botocore.session.get_session()
    session.get_component("data_loader").file_loader = LeanJSONFileLoader()
    return session
