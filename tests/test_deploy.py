"""The deployment files agree with the code and with each other.

Dockerfile, docker-compose.yml, config/docker.yaml, config/docker-cluster.yaml and
config/aggregator.service are checked statically (no Docker engine, no systemd): the
compose file against the vendored Compose Specification schema, every ``aggregator ...``
invocation against the click CLI, mounted and copied paths against the repository, the
container configs through ``load_config``, and the health checks against a stub server
answering 200 and 503.  The compose profile ``cluster`` (PostgreSQL, ``--role worker``
pollers, one ``--role web`` server) is checked the same way.
"""

from __future__ import annotations

import configparser
import fnmatch
import http.server
import json
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import click
import jsonschema
import pytest
import yaml
from sqlalchemy.engine import make_url

from aggregator.cli import cli
from aggregator.config import CONFIG_ENV_VAR, load_config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DOCKER_CONFIG = ROOT / "config" / "docker.yaml"
CLUSTER_CONFIG = ROOT / "config" / "docker-cluster.yaml"
EXAMPLE_CONFIG = ROOT / "config" / "aggregator.yaml"
SYSTEMD_UNIT = ROOT / "config" / "aggregator.service"
COMPOSE_SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"

SERVICE = "aggregator"
CLUSTER = "cluster"
DATA_DIR = PurePosixPath("/data")
HEALTH_PATH = "/healthz"


# --- helpers -------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def service() -> dict[str, Any]:
    return load_compose()["services"][SERVICE]


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; comments dropped, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment and empty lines, also inside continuations
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        current += stripped
        keyword, _, arguments = current.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    assert not current, "Dockerfile ends inside a line continuation"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last build stage (the image that runs)."""
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "Dockerfile has no FROM"
    return instructions[starts[-1] :]


def single(stage: list[tuple[str, str]], keyword: str) -> str:
    values = [arguments for kw, arguments in stage if kw == keyword]
    assert len(values) == 1, f"expected exactly one {keyword} in the final stage, got {values}"
    return values[0]


def exec_form(arguments: str, what: str) -> list[str]:
    """A JSON-array (exec form) instruction argument: no /bin/sh in between, so SIGTERM
    and SIGHUP reach the daemon itself."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        pytest.fail(f"{what} must use the exec (JSON array) form, got {arguments!r}")
    assert isinstance(value, list), f"{what}: {arguments!r}"
    assert all(isinstance(word, str) for word in value), f"{what}: {arguments!r}"
    return value


def dockerfile_healthcheck() -> tuple[str, list[str]]:
    """(options, exec-form command) of the HEALTHCHECK instruction."""
    arguments = single(final_stage(), "HEALTHCHECK")
    options, separator, command = arguments.partition(" CMD ")
    assert separator, f"HEALTHCHECK without CMD: {arguments!r}"
    return options, exec_form(command, "HEALTHCHECK CMD")


def option_value(words: list[str], option: str) -> str:
    assert words.count(option) == 1, f"{option} must appear once in {words}"
    return words[words.index(option) + 1]


def parse_cli(words: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``aggregator WORDS`` with the real click CLI without running it.

    Returns the command name and its parsed parameters; fails when the command or an
    option does not exist or a value does not convert (e.g. a non-numeric port).
    """
    group_options = {opt: param for param in cli.params for opt in param.opts}
    index = 0
    while index < len(words) and words[index].startswith("-"):
        name = words[index].split("=", 1)[0]
        assert name in group_options, f"`aggregator {name}` is not a global option"
        param = group_options[name]
        takes_value = not (getattr(param, "is_flag", False) or getattr(param, "count", False))
        index += 2 if takes_value and "=" not in words[index] else 1
    assert index < len(words), f"no command in `aggregator {shlex.join(words)}`"
    group_words, name, rest = words[:index], words[index], words[index + 1 :]
    assert name in cli.commands, (
        f"`aggregator {name}` is not a command of the CLI (it has: {sorted(cli.commands)})"
    )
    command = cli.commands[name]
    known = {opt for param in command.params for opt in param.opts} | set(group_options)
    for word in rest:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            assert option in known, f"`aggregator {name}` has no option {option}"
    parent = cli.make_context("aggregator", [*group_words, name])
    try:
        context = command.make_context(name, list(rest), parent=parent)
    except click.ClickException as exc:
        invocation = shlex.join(words)
        pytest.fail(f"`aggregator {invocation}` is rejected by the CLI: {exc.format_message()}")
    return name, context.params


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore excludes ``path`` from the build context: the last matching
    pattern wins, ``!`` re-includes, and a pattern matching a parent folder matches too."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        if pattern.startswith("**/"):
            tail = pattern[3:]
            hit = any(fnmatch.fnmatchcase(part, tail) for part in parts)
        else:
            hit = any(
                candidate.count("/") == pattern.count("/")
                and fnmatch.fnmatchcase(candidate, pattern)
                for candidate in candidates
            )
        if hit:
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# --- (a) the compose file is valid Compose ---------------------------------------------------


def compose_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


def schema_errors(document: object) -> list[str]:
    validator = compose_validator()
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_vendored_schema_is_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    assert schema["title"] == "Compose Specification"
    assert "2019-09" in schema["$schema"]
    assert jsonschema.validators.validator_for(schema) is jsonschema.Draft201909Validator
    assert {"service", "healthcheck", "volume", "command"} <= set(schema["definitions"])


def test_compose_file_validates_against_the_compose_specification() -> None:
    assert schema_errors(load_compose()) == []


def test_every_service_has_build_or_image() -> None:
    # The schema states this constraint in definitions/constraints but never $refs it.
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    constraint = schema["definitions"]["constraints"]["service"]
    validator = jsonschema.Draft201909Validator(constraint)
    for name, definition in load_compose()["services"].items():
        errors = [error.message for error in validator.iter_errors(definition)]
        assert errors == [], f"service {name}: {errors}"


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda doc: doc["services"][SERVICE].update(restart_policy="always"), "restart_policy"),
        (lambda doc: doc["services"][SERVICE].update(ports={"8080": 8080}), "ports"),
        (lambda doc: doc["services"][SERVICE]["healthcheck"].update(test=8), "test"),
        (lambda doc: doc.update(volume={"aggregator-data": None}), "volume"),
        (lambda doc: doc["services"]["worker"]["depends_on"]["postgres"].update(
            condition="healthy"), "depends_on"),
        (lambda doc: doc["services"]["worker"].update(deploy={"replica": 2}), "deploy"),
    ],
)
def test_schema_rejects_broken_variants(mutate: Any, where: str) -> None:
    """The validation above is not vacuous: plausible mistakes are caught."""
    document = load_compose()
    mutate(document)
    errors = schema_errors(document)
    assert errors, f"a compose file with a bad {where!r} passed validation"
    assert any(where in error for error in errors), errors


# --- (b) the command is a real CLI invocation ------------------------------------------------


def container_words() -> list[str]:
    """``aggregator`` arguments the container runs: ENTRYPOINT + compose command."""
    entrypoint = exec_form(single(final_stage(), "ENTRYPOINT"), "ENTRYPOINT")
    compose_service = service()
    if "entrypoint" in compose_service:
        entrypoint = compose_service["entrypoint"]
    assert entrypoint == ["aggregator"], f"the container must run the aggregator CLI: {entrypoint}"
    command = compose_service["command"]
    assert isinstance(command, list), "command should be a list (no shell word splitting)"
    return command


def test_compose_command_is_a_real_cli_invocation() -> None:
    words = container_words()
    name, params = parse_cli(words)
    assert name == "run", "the container runs the daemon (scheduler + HTTP server)"
    assert any(value == 8080 or value == "8080" for value in params.values()), params


def test_compose_command_serves_on_the_published_port_on_all_interfaces() -> None:
    words = container_words()
    assert option_value(words, "--host") == "0.0.0.0", "127.0.0.1 is unreachable from outside"
    container_ports = {str(mapping).rsplit(":", 1)[-1] for mapping in service()["ports"]}
    assert container_ports == {option_value(words, "--port")}


# --- (c) paths and the image agree with the compose file -------------------------------------


def test_compose_bind_mounts_exist_and_named_volumes_are_declared() -> None:
    compose = load_compose()
    declared = set(compose.get("volumes") or {})
    targets: dict[str, str] = {}
    for name, definition in compose["services"].items():
        for mount in definition.get("volumes", []):
            source, target, *mode = mount.split(":")
            if source.startswith((".", "/")):
                assert (COMPOSE_FILE.parent / source).exists(), f"{name}: {source} is missing"
            else:
                assert source in declared, f"{name}: volume {source!r} is not declared"
            if name == SERVICE:
                targets[target] = source
                if target.startswith("/config"):
                    assert mode == ["ro"], "the config is mounted read-only"
    assert targets["/config/aggregator.yaml"] == "./config/docker.yaml"
    assert targets[str(DATA_DIR)] in declared, "/data is a named volume"


def test_compose_config_path_is_the_mounted_file() -> None:
    words = container_words()
    config_path = option_value(words, "--config")
    mounted = {mount.split(":")[1] for mount in service()["volumes"]}
    assert config_path in mounted
    assert service()["environment"][CONFIG_ENV_VAR] == config_path


def test_compose_builds_this_repository() -> None:
    build = service()["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (COMPOSE_FILE.parent / context / dockerfile).resolve() == DOCKERFILE


def test_compose_stop_and_restart_policy() -> None:
    compose_service = service()
    assert compose_service["restart"] == "unless-stopped"
    assert compose_service["stop_signal"] == "SIGTERM"
    assert compose_service["stop_grace_period"] == "30s"


def test_dockerfile_cmd_and_entrypoint_match_the_compose_command() -> None:
    stage = final_stage()
    assert exec_form(single(stage, "ENTRYPOINT"), "ENTRYPOINT") == ["aggregator"]
    assert exec_form(single(stage, "CMD"), "CMD") == service()["command"]


def test_dockerfile_runtime_image() -> None:
    stage = final_stage()
    assert stage[0][1].split()[0] == "python:3.11-slim"
    user = single(stage, "USER").split(":")[0]
    assert user not in {"root", "0"}, "the daemon must not run as root"
    assert single(stage, "WORKDIR") == "/srv/aggregator"
    assert single(stage, "EXPOSE").split() == ["8080"]
    assert str(DATA_DIR) in exec_form(single(stage, "VOLUME"), "VOLUME")
    installs = [args for kw, args in dockerfile_instructions(DOCKERFILE.read_text()) if kw == "RUN"]
    assert any(
        re.search(r"pip install .*['\"]?\.\[postgres\]", args) for args in installs
    ), "the image installs the project with the postgres extra"


def test_dockerfile_copies_files_that_exist_and_are_in_the_build_context() -> None:
    patterns = dockerignore_patterns()
    copied = []
    for keyword, arguments in dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if keyword not in {"COPY", "ADD"} or "--from=" in arguments:
            continue
        words = [word for word in shlex.split(arguments) if not word.startswith("--")]
        copied.extend(words[:-1])
    assert {"pyproject.toml", "aggregator"} <= set(copied)
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not dockerignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for source in ("aggregator/__init__.py", "aggregator/store/migrations/env.py"):
        assert not dockerignored(source, patterns), f"{source} must reach the build"
    for junk in (".venv/bin/python", ".git/HEAD", "tests/test_deploy.py", "data/aggregator.db",
                 "aggregator/__pycache__/cli.cpython-311.pyc"):
        assert dockerignored(junk, patterns), f"{junk} should stay out of the build context"


# --- (d) the container config ---------------------------------------------------------------


def sqlite_file(url: str) -> PurePosixPath:
    parsed = make_url(url)
    assert parsed.get_backend_name() == "sqlite", url
    assert parsed.database, url
    return PurePosixPath(parsed.database)


def test_docker_config_loads_and_writes_only_under_data(tmp_path: Path) -> None:
    settings = load_config(DOCKER_CONFIG)
    database = sqlite_file(settings.database_url)
    assert database.is_absolute() and database.is_relative_to(DATA_DIR), database
    output = PurePosixPath(settings.output_dir.as_posix())
    assert output.is_absolute() and output.is_relative_to(DATA_DIR), output
    # Absolute, so the folder the config sits in (read-only /config) does not matter.
    elsewhere = tmp_path / "mounted" / "aggregator.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(DOCKER_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    moved = load_config(elsewhere)
    assert (moved.database_url, moved.output_dir) == (settings.database_url, settings.output_dir)
    assert not settings.allow_private_networks


def test_docker_config_sources_come_from_the_example_config() -> None:
    docker_sources = {s.id: s for s in load_config(DOCKER_CONFIG).sources}
    example_sources = {s.id: s for s in load_config(EXAMPLE_CONFIG).sources}
    assert docker_sources, "the container config polls something"
    assert set(docker_sources) <= set(example_sources)
    for source_id, source in docker_sources.items():
        assert source == example_sources[source_id], source_id


def test_docker_config_lives_in_the_data_volume_of_the_image() -> None:
    volumes = exec_form(single(final_stage(), "VOLUME"), "VOLUME")
    mounted = {mount.split(":")[1] for mount in service()["volumes"]}
    assert str(DATA_DIR) in volumes and str(DATA_DIR) in mounted


# --- (e) the health check -------------------------------------------------------------------


def health_code(command: list[str]) -> str:
    assert command[:2] in (["CMD", "python"], ["python", "-c"]), command
    words = command[1:] if command[0] == "CMD" else command
    assert words[:2] == ["python", "-c"], f"the slim image has no curl: {command}"
    return words[2]


def health_url(code: str) -> str:
    urls = re.findall(r"https?://[^'\"\s]+", code)
    assert len(urls) == 1, code
    return urls[0]


def test_healthchecks_target_healthz_on_the_exposed_port() -> None:
    compose_code = health_code(service()["healthcheck"]["test"])
    options, command = dockerfile_healthcheck()
    dockerfile_code = health_code(command)
    assert compose_code == dockerfile_code, "Dockerfile and compose probe the same way"
    url = urlsplit(health_url(compose_code))
    assert url.path == HEALTH_PATH
    assert url.hostname == "127.0.0.1"
    assert str(url.port) == single(final_stage(), "EXPOSE").split()[0]
    assert str(url.port) == option_value(container_words(), "--port")
    assert "--timeout=" in options and "--interval=" in options
    assert service()["healthcheck"]["timeout"]


class _HealthHandler(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str]

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        body = json.dumps({"status": "ok" if self.status == 200 else "down"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[http.server.HTTPServer, type[_HealthHandler]]]:
    handler = type("Handler", (_HealthHandler,), {"paths": []})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_exit_status_follows_healthz(
    health_server: tuple[http.server.HTTPServer, type[_HealthHandler]],
    status: int,
    healthy: bool,
) -> None:
    server, handler = health_server
    handler.status = status
    code = health_code(service()["healthcheck"]["test"])
    port = server.server_address[1]
    probe = code.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    assert probe != code
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=False
    )
    assert (result.returncode == 0) is healthy, result.stderr
    assert handler.paths == [HEALTH_PATH]


# --- (f) the systemd unit -------------------------------------------------------------------


def load_unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(SYSTEMD_UNIT.read_text(encoding="utf-8"), source=str(SYSTEMD_UNIT))
    return parser


def test_systemd_unit_sections_and_stop_behaviour() -> None:
    unit = load_unit()
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    service_section = unit["Service"]
    assert service_section["KillSignal"] == "SIGTERM"
    assert service_section["TimeoutStopSec"] == "30"
    assert service_section["Restart"] == "on-failure"
    assert service_section["User"] == "aggregator"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    reload_words = shlex.split(service_section["ExecReload"])
    assert PurePosixPath(reload_words[0]).name == "kill"
    assert reload_words[1:] == ["-HUP", "$MAINPID"]


def test_systemd_unit_hardening() -> None:
    service_section = load_unit()["Service"]
    assert service_section["NoNewPrivileges"] == "yes"
    assert service_section["ProtectSystem"] == "strict"
    assert service_section["PrivateTmp"] == "yes"
    assert "/var/lib/aggregator" in service_section["ReadWritePaths"].split()


def test_systemd_exec_start_runs_the_daemon() -> None:
    words = shlex.split(load_unit()["Service"]["ExecStart"])
    assert PurePosixPath(words[0]).name == "aggregator" and PurePosixPath(words[0]).is_absolute()
    assert words[1:3] == ["run", "--config"]
    config_path = PurePosixPath(option_value(words, "--config"))
    assert config_path.is_absolute()
    assert option_value(words, "--host") == "127.0.0.1", "behind a reverse proxy"


def test_systemd_exec_start_is_a_real_cli_invocation() -> None:
    name, params = parse_cli(shlex.split(load_unit()["Service"]["ExecStart"])[1:])
    assert name == "run"
    assert any(value == 8080 or value == "8080" for value in params.values()), params


def test_systemd_exec_start_pre_checks_the_same_config() -> None:
    service_section = load_unit()["Service"]
    words = shlex.split(service_section["ExecStartPre"])
    name, _ = parse_cli(words[1:])
    assert name == "check-config"
    start = shlex.split(service_section["ExecStart"])
    assert words[0] == start[0]
    assert option_value(words, "--config") == option_value(start, "--config")


# --- (g) the cluster profile: PostgreSQL + workers + web -----------------------------------


def cluster_services() -> dict[str, dict[str, Any]]:
    """The services of the ``cluster`` profile, by name."""
    return {
        name: definition
        for name, definition in load_compose()["services"].items()
        if CLUSTER in definition.get("profiles", [])
    }


def cluster_roles() -> dict[str, tuple[str, list[str]]]:
    """(``--role``, command words) of every cluster service that runs the aggregator."""
    roles = {}
    for name, definition in cluster_services().items():
        if name == "postgres":
            continue
        assert definition.get("entrypoint", ["aggregator"]) == ["aggregator"], name
        words = definition["command"]
        assert isinstance(words, list), f"{name}: command should be a list"
        command, params = parse_cli(words)
        assert command == "run", f"{name} runs the daemon"
        roles[name] = (params["role"], words)
    return roles


def services_with_role(role: str) -> dict[str, dict[str, Any]]:
    services = cluster_services()
    return {name: services[name] for name, (r, _) in cluster_roles().items() if r == role}


def replicas(definition: dict[str, Any]) -> int:
    """Containers compose starts for a service: ``deploy.replicas``, else ``scale``, else 1."""
    count = (definition.get("deploy") or {}).get("replicas", definition.get("scale", 1))
    return int(count)


def mounts(definition: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    """target -> (source, options) of a service's short-syntax volumes."""
    result = {}
    for mount in definition.get("volumes", []):
        source, target, *options = mount.split(":")
        result[target] = (source, options)
    return result


def published_ports(definition: dict[str, Any]) -> list[tuple[str, str]]:
    """(host port, container port) pairs of a service's short-syntax ports."""
    pairs = []
    for mapping in definition.get("ports", []):
        *host, container = str(mapping).split(":")
        pairs.append((host[-1] if host else container, container))
    return pairs


def test_cluster_profile_has_postgres_two_workers_and_one_web() -> None:
    services = cluster_services()
    assert "postgres" in services
    roles = {role for role, _ in cluster_roles().values()}
    assert roles == {"worker", "web"}, "the cluster splits polling from serving"
    workers = services_with_role("worker")
    assert sum(replicas(definition) for definition in workers.values()) >= 2
    webs = services_with_role("web")
    assert sum(replicas(definition) for definition in webs.values()) == 1


def test_cluster_leaves_the_default_service_and_the_postgres_profile_alone() -> None:
    compose = load_compose()
    default = compose["services"][SERVICE]
    assert "profiles" not in default, "`docker compose up` still starts the single process"
    assert SERVICE not in cluster_services()
    assert mounts(default)["/config/aggregator.yaml"][0] == "./config/docker.yaml"
    assert set(compose["services"]["postgres"]["profiles"]) >= {"postgres", CLUSTER}


def test_cluster_postgres_has_a_pg_isready_healthcheck() -> None:
    postgres = cluster_services()["postgres"]
    test = postgres["healthcheck"]["test"]
    words = shlex.split(test[1]) if test[0] == "CMD-SHELL" else test[1:]
    assert words[0] == "pg_isready", test
    environment = postgres["environment"]
    assert option_value(words, "-U") == environment["POSTGRES_USER"]
    assert option_value(words, "-d") == environment["POSTGRES_DB"]


def test_cluster_workers_and_web_wait_for_a_healthy_postgres() -> None:
    for name in cluster_roles():
        depends_on = cluster_services()[name]["depends_on"]
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        assert depends_on["postgres"]["condition"] == "service_healthy", name


def test_cluster_commands_use_their_roles_on_all_interfaces() -> None:
    for name, (role, words) in cluster_roles().items():
        assert option_value(words, "--role") == role
        assert option_value(words, "--host") == "0.0.0.0", f"{name}: reachable from outside"
        option_value(words, "--port")  # workers too: the health check needs HTTP
    for name in services_with_role("worker"):
        assert option_value(cluster_roles()[name][1], "--port") == "8081"
    for name in services_with_role("web"):
        assert option_value(cluster_roles()[name][1], "--port") == "8080"


def test_cluster_web_publishes_its_port_and_workers_publish_none() -> None:
    for name, definition in services_with_role("web").items():
        containers = {container for _, container in published_ports(definition)}
        assert containers == {option_value(cluster_roles()[name][1], "--port")}
    for name, definition in services_with_role("worker").items():
        assert not definition.get("ports"), f"{name}: scaled workers cannot share a host port"
    host_ports = [
        host
        for definition in load_compose()["services"].values()
        for host, _ in published_ports(definition)
    ]
    assert len(host_ports) == len(set(host_ports)), f"host ports collide: {host_ports}"


def test_cluster_services_mount_the_cluster_config_read_only() -> None:
    for name, (_, words) in cluster_roles().items():
        definition = cluster_services()[name]
        config_path = option_value(words, "--config")
        source, options = mounts(definition)[config_path]
        assert source == "./config/" + CLUSTER_CONFIG.name, name
        assert "ro" in options, f"{name}: the config is mounted read-only"
        assert definition["environment"][CONFIG_ENV_VAR] == config_path, name
        for target, (_, target_options) in mounts(definition).items():
            if target.startswith("/config"):
                assert "ro" in target_options, f"{name}: {target} must be read-only"


def test_cluster_workers_and_web_share_the_output_volume() -> None:
    output = PurePosixPath(load_config(CLUSTER_CONFIG).output_dir.as_posix())
    declared = set(load_compose().get("volumes") or {})
    sources = set()
    for name, definition in cluster_services().items():
        if name == "postgres":
            continue
        role = cluster_roles()[name][0]
        assert str(output) in mounts(definition), f"{name} does not mount {output}"
        source, options = mounts(definition)[str(output)]
        assert source in declared, f"{name}: {source!r} should be a declared named volume"
        if role == "worker":
            assert "ro" not in options, f"{name}: workers write the feeds"
        else:
            assert "ro" in options, f"{name}: the web server only reads the feeds"
        sources.add(source)
    assert len(sources) == 1, f"workers and web must share one volume: {sources}"
    assert sources.isdisjoint(
        {source for source, _ in mounts(load_compose()["services"][SERVICE]).values()}
    ), "the cluster does not share the single-process service's data"


def test_cluster_config_loads_and_points_at_the_postgres_service() -> None:
    compose = load_compose()
    settings = load_config(CLUSTER_CONFIG)
    url = make_url(settings.database_url)
    assert url.get_backend_name() == "postgresql", settings.database_url
    assert url.get_driver_name() == "psycopg", "the image installs psycopg (the postgres extra)"
    assert url.host == "postgres" and url.host in compose["services"]
    environment = compose["services"]["postgres"]["environment"]
    assert url.username == environment["POSTGRES_USER"]
    assert url.database == environment["POSTGRES_DB"]
    default_password = re.fullmatch(r"\$\{POSTGRES_PASSWORD:-(.*)\}",
                                    environment["POSTGRES_PASSWORD"])
    assert default_password and url.password == default_password.group(1)
    output = PurePosixPath(settings.output_dir.as_posix())
    assert output.is_absolute() and output.is_relative_to(DATA_DIR), output
    assert not settings.allow_private_networks


def test_cluster_config_polls_the_sources_of_the_docker_config() -> None:
    cluster = load_config(CLUSTER_CONFIG).sources
    assert cluster, "the cluster polls something"
    assert cluster == load_config(DOCKER_CONFIG).sources


def test_cluster_site_url_is_the_published_web_port() -> None:
    site = urlsplit(str(load_config(CLUSTER_CONFIG).site_url))
    hosts = {host for d in services_with_role("web").values() for host, _ in published_ports(d)}
    assert hosts == {str(site.port or 80)}


def test_cluster_services_build_this_image() -> None:
    default = load_compose()["services"][SERVICE]
    for name in cluster_roles():
        definition = cluster_services()[name]
        assert definition["build"] == default["build"], name
        assert definition["image"] == default["image"], name
        assert definition["init"] is True, name
        assert definition["restart"] == "unless-stopped", name
        assert definition["stop_signal"] == "SIGTERM", name


def test_cluster_healthchecks_target_healthz_on_their_port() -> None:
    for name, (_, words) in cluster_roles().items():
        url = urlsplit(health_url(health_code(cluster_services()[name]["healthcheck"]["test"])))
        assert url.path == HEALTH_PATH, name
        assert url.hostname == "127.0.0.1", name
        assert str(url.port) == option_value(words, "--port"), name
        assert cluster_services()[name]["healthcheck"]["timeout"], name


@pytest.mark.parametrize("name", ["worker", "web"])
@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_cluster_healthcheck_exit_status_follows_healthz(
    health_server: tuple[http.server.HTTPServer, type[_HealthHandler]],
    name: str,
    status: int,
    healthy: bool,
) -> None:
    server, handler = health_server
    handler.status = status
    code = health_code(cluster_services()[name]["healthcheck"]["test"])
    url = urlsplit(health_url(code))
    probe = code.replace(url.netloc, f"127.0.0.1:{server.server_address[1]}")
    assert probe != code
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=False
    )
    assert (result.returncode == 0) is healthy, result.stderr
    assert handler.paths == [HEALTH_PATH]
