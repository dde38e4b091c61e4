"""Which systems run, and how: the service, the ceiling and the peers, each as it is and some tuned.

Every one runs as a single process under the same HTTP stack where it is Python (uvicorn with
uvloop and httptools, one worker, as `files-service serve` runs), storing under one work
folder on one disk. "Tuned" runs the same process with glibc's allocator told to keep large
buffers mapped, which the issue measured to nearly double a bare app's upload speed.
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import replace
from importlib import metadata
from pathlib import Path

from peers import BENCH, NODE_PEER, TUSPYSERVER
from protocols import Ceiling, FilesAPI, ServiceTus, Tus, UploadProtocol
from systems import HOST, Spec, slug

GLIBC_TUNED = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456"
REPOSITORY = BENCH.parent


def _variant(name: str, env: dict[str, str], tuned: bool) -> tuple[str, dict[str, str], str]:
    """(name, environment, a note on the variant) of the plain or the tuned variant."""
    if not tuned:
        return name, env, ""
    return f"{name} tuned", {**env, "GLIBC_TUNABLES": GLIBC_TUNED}, "; with GLIBC_TUNABLES set"


def service(
    workdir: Path,
    redis_url: str | None,
    tuned: bool = False,
    name: str = "service",
    protocol: UploadProtocol | None = None,
    workers: int = 1,
    processes: int = 1,
    **extra: str,
) -> Spec:
    """`files-service serve --workers N` with a fresh data folder and a Redis prefix of its own, spoken to in
    its own API (or `protocol`); with `processes`, that many such processes on the same folder, Redis and prefix."""
    env = {
        "PYTHONPATH": str(REPOSITORY),
        "FILES_LOG_LEVEL": "warning",
        "FILES_REDIS_PREFIX": f"bench-{secrets.token_hex(4)}:",
        **extra,
    }
    if redis_url is not None:
        env["FILES_REDIS_URL"] = redis_url
    name, env, variant = _variant(name, env, tuned)
    store = workdir / slug(name)
    env["FILES_DATA_DIR"] = str(store)
    return Spec(
        name=name,
        command=[
            sys.executable,
            "-m",
            "service",
            "serve",
            "--host",
            HOST,
            "--port",
            "{port}",
            "--workers",
            str(workers),
        ],
        env=env,
        protocol=protocol or FilesAPI(),
        store=store,
        flushes=True,
        notes=(f"{processes} separate processes of " if processes > 1 else "")
        + f"this repository, `files-service serve --workers {workers}`{variant}"
        + (
            ""
            if redis_url is None or not redis_url.startswith("redis+cluster")
            else ", on a Redis Cluster of three primaries"
        ),
        processes=processes,
    )


def service_tus(workdir: Path, redis_url: str | None) -> Spec:
    """The service through its tus front, with the same requests as the tus peers get."""
    spec = service(workdir, redis_url, name="service tus", protocol=ServiceTus())
    return replace(spec, notes=f"{spec.notes}, through its tus front at /tus/ (the requests the tus peers get)")


def service_granian(workdir: Path, redis_url: str | None) -> Spec:
    """The service's app under granian (ASGI, uvloop, one worker) instead of uvicorn: the same settings,
    and the allocator tunables and metrics folder `files-service serve` sets up for itself."""
    spec = service(workdir, redis_url, name="service granian")
    return replace(
        spec,
        command=[
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--factory",
            "--host",
            HOST,
            "--port",
            "{port}",
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--no-ws",
            "--log-level",
            "warning",
            "service.http.app:create_app",
        ],  # fmt: skip
        env={
            **spec.env,
            "GLIBC_TUNABLES": GLIBC_TUNED,
            "PROMETHEUS_MULTIPROC_DIR": str(_made(workdir / "granian-metrics")),
        },
        notes=f"this repository's app under granian {_version('granian')} (`granian --interface asgi --loop uvloop"
        " --workers 1`) instead of uvicorn: bench only, `files-service serve` runs uvicorn",
    )


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def ceiling(workdir: Path, tuned: bool = False) -> Spec:
    name, env, variant = _variant("ceiling", {}, tuned)
    store = workdir / slug(name)
    return Spec(
        name=name,
        command=[sys.executable, str(BENCH / "ceiling.py"), "--host", HOST, "--port", "{port}", "--dir", str(store)],
        env=env,
        protocol=Ceiling(),
        store=store,
        flushes=True,
        notes=f"bench/ceiling.py: a bare Starlette app that streams the body into a file and fsyncs it{variant}",
    )


def tuspyserver(workdir: Path, python: Path, tuned: bool = False) -> Spec:
    name, env, variant = _variant("tuspyserver", {}, tuned)
    store = workdir / slug(name)
    return Spec(
        name=name,
        command=[str(python), str(BENCH / "tuspy_app.py"), "--host", HOST, "--port", "{port}", "--dir", str(store)],
        env=env,
        protocol=Tus(),
        store=store,
        flushes=False,
        suffixes=("", ".info"),
        probe="/files",
        notes=f"{TUSPYSERVER.replace('==', ' ')} on FastAPI (bench/tuspy_app.py){variant}",
    )


def tus_node(workdir: Path, node_dir: Path) -> Spec:
    name = "@tus/server"
    store = workdir / slug(name)
    return Spec(
        name=name,
        command=["node", str(BENCH / "tus_node_server.mjs")],
        env={"PORT": "{port}", "DIR": str(store), "TUS_NODE_DIR": str(node_dir)},
        protocol=Tus(),
        store=store,
        flushes=False,
        suffixes=("", ".json"),
        probe="/files",
        notes=" with ".join(f"{package} {version}" for package, version in NODE_PEER.items())
        + " on Node.js (bench/tus_node_server.mjs)",
    )
