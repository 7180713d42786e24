"""The deployment files agree with the code: docker-compose.yml, deploy/docker/Dockerfile,
deploy/docker/postgres-init/, deploy/k8s/.

Pure: the files are parsed (PyYAML, tomllib, a small Dockerfile reader) and the services'
settings classes imported; nothing is built, started or contacted.

The central check: pydantic-settings silently ignores an unknown HUB_* variable (``extra="ignore"``),
so a typo in a deployment file (HUB_KAFKA_BOOTSTRAP_SERVERS, HUB_SMTP_HOST...) would leave the
service on its local default without any error. Every HUB_* name set for a service must therefore
be one its settings class reads, derived from the class itself (``model_fields``, recursively,
env prefix + nested delimiter, aliases as pydantic-settings uses them), and the values must
validate.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import json
import os
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from pydantic import ValidationError

from hub_platform.env_names import env_names
from hub_platform.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PG_INIT_DIR = ROOT / "deploy" / "docker" / "postgres-init"
K8S_DIR = ROOT / "deploy" / "k8s"

#: service -> its HTTP port (the one its settings class defaults to)
SERVICES: dict[str, int] = {"identity": 8081, "linking": 8082, "tasks": 8083, "notifications": 8084}
INFRA = ("kafka", "postgres", "mailpit")
REQUIRED_ENV = {"HUB_KAFKA__BOOTSTRAP_SERVERS", "HUB_DB__URL", "HUB_SERVICE_NAME", "HUB_HTTP_PORT"}
DATABASE = "synchub"
#: services scaled in compose with `--scale` (documented in docker-compose.yml): no fixed host port
COMPOSE_SCALABLE = ("tasks",)
#: services run with several replicas in deploy/k8s (one consumer group)
K8S_SCALED_OUT = ("linking", "tasks")


# -- settings classes ----------------------------------------------------------------------------


@functools.cache
def settings_class(service: str) -> type[ServiceSettings]:
    """The ServiceSettings subclass defined in hub_<service>.settings (fails loudly if absent)."""
    module_name = f"hub_{service}.settings"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name not in (module_name, f"hub_{service}"):
            raise
        pytest.fail(
            f"{module_name} does not exist (services/{service}/src/hub_{service}/settings.py): the deployment "
            f"files cannot be checked against the {service} service's settings class. Write it (a "
            f"`{service.capitalize()}Settings(ServiceSettings)` class) or fix the package install.",
            pytrace=False,
        )
    found = [
        obj for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, ServiceSettings) and obj is not ServiceSettings
        and obj.__module__ == module.__name__
    ]
    if len(found) != 1:
        pytest.fail(f"{module_name} must define exactly one ServiceSettings subclass, found {found}", pytrace=False)
    return found[0]


def valid_env_names(cls: type[ServiceSettings]) -> frozenset[str]:
    """Every environment variable `cls` reads (the services' own start-up check uses the same list)."""
    try:
        return env_names(cls)
    except ValueError as exc:
        pytest.fail(str(exc), pytrace=False)


def load_settings(service: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, where: str) -> ServiceSettings:
    """Instantiate the service's settings from exactly `env` (every other HUB_* variable removed)."""
    cls = settings_class(service)
    for key in list(os.environ):
        if key.upper().startswith("HUB_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        return cls()
    except ValidationError as exc:
        pytest.fail(f"{where}: the environment of {service} does not validate against {cls.__name__}:\n{exc}", pytrace=False)


def check_env(service: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, where: str) -> ServiceSettings:
    cls = settings_class(service)
    valid = valid_env_names(cls)
    hub_vars = {k for k in env if k.upper().startswith("HUB_")}
    unknown = sorted(k for k in hub_vars if k.upper() not in valid)
    hints = {k: difflib.get_close_matches(k.upper(), valid, n=1) for k in unknown}
    assert not unknown, (
        f"{where}: {service} sets {unknown}, which {cls.__module__}.{cls.__name__} does not read "
        f"(it would be ignored silently). Did you mean: {hints}? Valid names: {sorted(valid)}"
    )
    missing = sorted(REQUIRED_ENV - {k.upper() for k in hub_vars})
    assert not missing, f"{where}: {service} must set {missing}"
    settings = load_settings(service, env, monkeypatch, where)
    assert settings.service_name == service, f"{where}: HUB_SERVICE_NAME of {service} is {settings.service_name!r}"
    assert settings.http_port == SERVICES[service], f"{where}: {service} listens on {settings.http_port}, expected {SERVICES[service]}"
    return settings


def test_settings_classes_default_to_the_deployment_ports() -> None:
    """Ports are fixed per service everywhere (Dockerfile, compose, k8s): the classes must agree."""
    for service, port in SERVICES.items():
        cls = settings_class(service)
        defaults = cls.model_fields
        assert defaults["service_name"].default == service, f"{cls.__name__}.service_name defaults to {defaults['service_name'].default!r}"
        assert defaults["http_port"].default == port, f"{cls.__name__}.http_port defaults to {defaults['http_port'].default}, expected {port}"


def test_env_name_derivation_knows_the_platform_settings() -> None:
    names = valid_env_names(ServiceSettings)
    assert {"HUB_SERVICE_NAME", "HUB_HTTP_PORT", "HUB_HTTP_HOST", "HUB_KAFKA__BOOTSTRAP_SERVERS", "HUB_DB__URL",
            "HUB_OBS__OTEL_EXPORTER", "HUB_KAFKA__SASL_PASSWORD"} <= names
    assert "HUB_KAFKA_BOOTSTRAP_SERVERS" not in names and "HUB_BOOTSTRAP_SERVERS" not in names


# -- compose helpers -----------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$\$")


#: secrets compose must take from the host (`${VAR:?why}`: no default, compose stops when unset)
COMPOSE_REQUIRED = {"HUB_LINKING_ADMIN_TOKEN", "HUB_OPERATOR_TOKEN"}
REQUIRED_PLACEHOLDER = "set-from-the-host-environment-or-.env-file"


def interpolate(value: str) -> str:
    """Compose interpolation with an empty host environment: ${VAR:-default} -> default."""

    def replace(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        op = m.group("op")
        if op in (":-", "-"):
            return m.group("arg")
        if op in (":?", "?") and m.group("name") in COMPOSE_REQUIRED:
            return REQUIRED_PLACEHOLDER
        pytest.fail(f"docker-compose.yml: {m.group(0)} has no default; give it one (${{{m.group('name')}:-...}})", pytrace=False)

    return _INTERPOLATION.sub(replace, value)


def env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return interpolate(str(value))


def compose_env(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {str(k): env_value(v) for k, v in env.items()}


@functools.cache
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.exists(), "docker-compose.yml is missing at the repository root"
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_service(name: str) -> dict[str, Any]:
    services = compose().get("services") or {}
    assert name in services, f"docker-compose.yml has no service {name!r} (has {sorted(services)})"
    return services[name]


@dataclass
class PortMapping:
    container: int
    host: str | None  # None: no host port (ephemeral); "8081" or a range "18083-18085"


def compose_ports(spec: dict[str, Any]) -> list[PortMapping]:
    out = []
    for entry in spec.get("ports") or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            out.append(PortMapping(int(entry["target"]), str(published) if published not in (None, "") else None))
            continue
        text = str(entry).split("/", 1)[0]
        if text.startswith("["):  # [::1]:6001:6001
            text = text.split("]:", 1)[1]
        parts = text.split(":")
        container = parts[-1]
        host = parts[-2] if len(parts) >= 2 else None
        assert "-" not in container, f"container port ranges are not expected here: {entry!r}"
        out.append(PortMapping(int(container), host or None))
    return out


def healthcheck_command(check: dict[str, Any] | None) -> str:
    assert check, "no healthcheck"
    test = check.get("test")
    assert test, "healthcheck without test"
    if isinstance(test, str):
        return test
    assert test[0] in ("CMD", "CMD-SHELL"), f"healthcheck test must start with CMD or CMD-SHELL: {test}"
    return " ".join(test[1:])


# -- Dockerfile ----------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def chain(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        out = [self.stage(name)]
        names = {s.name for s in self.stages}
        while out[-1].base in names:
            out.append(self.stage(out[-1].base))
        return out

    def image(self, stage: Stage) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.global_args.get(m.group(1) or m.group(2), m.group(0)), stage.base)


@functools.cache
def dockerfile() -> Dockerfile:
    assert DOCKERFILE.exists(), "deploy/docker/Dockerfile is missing"
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") and not pending:
            continue
        if line.startswith("#"):  # comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip():
            logical.append(pending.strip())
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=words[0]))
        elif not stages:
            if keyword == "ARG":
                key, _, default = args.partition("=")
                global_args[key] = default
        else:
            stages[-1].instructions.append((keyword, args))
    return Dockerfile(global_args, stages)


def _exec_form(args: str) -> list[str] | None:
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) else None


def _env_assignments(args: str) -> dict[str, str]:
    out = {}
    for word in shlex.split(args):
        if "=" in word:
            k, _, v = word.partition("=")
            out[k] = v
    return out


# -- compose: structure ---------------------------------------------------------------------------


def test_compose_has_the_hub_and_its_infrastructure() -> None:
    services = compose().get("services") or {}
    missing = sorted((set(SERVICES) | set(INFRA)) - set(services))
    assert not missing, f"docker-compose.yml lacks {missing}"


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_builds_its_dockerfile_target(service: str) -> None:
    spec = compose_service(service)
    build = spec.get("build")
    assert isinstance(build, dict), f"{service}: build must be a mapping (context, dockerfile, target)"
    assert (ROOT / build.get("context", ".")).resolve() == ROOT, f"{service}: build context must be the repository root"
    assert (ROOT / build.get("context", ".") / build["dockerfile"]).resolve() == DOCKERFILE, f"{service}: dockerfile must be deploy/docker/Dockerfile"
    target = build.get("target")
    stage_names = [s.name for s in dockerfile().stages]
    assert target == service, f"{service}: build target is {target!r}, expected {service!r}"
    assert target in stage_names, f"{service}: target {target!r} is not a stage of the Dockerfile (stages: {stage_names})"
    args = build.get("args") or {}
    if isinstance(args, list):
        args = dict(a.split("=", 1) for a in args)
    assert str(args.get("SERVICE")) == service, f"{service}: build arg SERVICE must be {service!r} (the deps stage syncs hub-$SERVICE)"


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_waits_for_healthy_infrastructure(service: str) -> None:
    spec = compose_service(service)
    depends = spec.get("depends_on")
    assert isinstance(depends, dict), f"{service}: depends_on must be the long form with conditions"
    needed = {"kafka", "postgres"} | ({"mailpit"} if service == "notifications" else set())
    for dep in sorted(needed):
        assert dep in depends, f"{service} must depend on {dep}"
        assert depends[dep].get("condition") == "service_healthy", f"{service}: depends_on {dep} must be condition: service_healthy"
        assert compose_service(dep).get("healthcheck"), f"{dep} needs a healthcheck for service_healthy to work"


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_env_is_what_its_settings_read(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    check_env(service, compose_env(compose_service(service)), monkeypatch, "docker-compose.yml")


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_port_matches_mapping_and_healthcheck(service: str) -> None:
    spec = compose_service(service)
    port = int(compose_env(spec)["HUB_HTTP_PORT"])
    assert port == SERVICES[service]
    assert compose_env(spec).get("HUB_HTTP_HOST") == "0.0.0.0", f"{service}: HUB_HTTP_HOST must be 0.0.0.0 in a container"
    mapped = [p.container for p in compose_ports(spec)]
    assert mapped == [port], f"{service}: ports map container port(s) {mapped}, HUB_HTTP_PORT is {port}"
    command = healthcheck_command(spec.get("healthcheck"))
    urls = re.findall(r"https?://[^/'\"\s]+:(\d+)(/\w+)", command)
    assert urls, f"{service}: the healthcheck calls no http://host:port/path URL: {command}"
    assert all(int(p) == port and path == "/healthz" for p, path in urls), f"{service}: healthcheck {urls} is not /healthz on {port}"
    assert "curl" not in command and "wget" not in command, f"{service}: python:3.11-slim has neither curl nor wget"


@pytest.mark.parametrize("service", COMPOSE_SCALABLE)
def test_compose_scaled_service_has_no_fixed_host_port(service: str) -> None:
    for mapping in compose_ports(compose_service(service)):
        assert mapping.host is None or "-" in mapping.host, (
            f"{service} publishes fixed host port {mapping.host}: `docker compose up --scale {service}=3` would fail"
        )
    assert f"--scale {service}=" in COMPOSE_FILE.read_text(), "docker-compose.yml should document how to scale"


def test_compose_kafka_is_a_single_kraft_node_without_auto_create() -> None:
    spec = compose_service("kafka")
    assert spec["image"] == "apache/kafka:4.1.1"
    env = compose_env(spec)
    for key in ("KAFKA_NODE_ID", "KAFKA_PROCESS_ROLES", "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS",
                "KAFKA_CONTROLLER_LISTENER_NAMES", "CLUSTER_ID"):
        assert env.get(key), f"kafka: {key} is not set"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") or env.get("KAFKA_CONTROLLER_QUORUM_BOOTSTRAP_SERVERS")
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env.get(key) == "1", f"kafka: {key} must be 1 on a single node"
    assert "kafka-broker-api-versions.sh" in healthcheck_command(spec.get("healthcheck"))
    # the services' bootstrap address is one the broker advertises
    advertised = {urlsplit(u.strip()).netloc for u in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for service in SERVICES:
        bootstrap = compose_env(compose_service(service))["HUB_KAFKA__BOOTSTRAP_SERVERS"]
        assert set(bootstrap.split(",")) <= advertised, f"{service} bootstraps from {bootstrap}, the broker advertises {advertised}"


@functools.cache
def pg_init_sql() -> str:
    files = sorted(PG_INIT_DIR.glob("*.sql"))
    assert files, "deploy/docker/postgres-init/ has no .sql script"
    return "\n".join(f.read_text() for f in files)


def _ident(name: str) -> str:
    return rf'(?:"{name}"|{name})'


def test_postgres_init_creates_the_database_and_one_role_and_schema_per_service() -> None:
    spec = compose_service("postgres")
    assert spec["image"] == "postgres:17"
    assert "pg_isready" in healthcheck_command(spec.get("healthcheck"))
    mounts = [str(v) for v in spec.get("volumes") or []]
    assert any(m.split(":")[0].rstrip("/") in ("./deploy/docker/postgres-init", "deploy/docker/postgres-init")
               and m.split(":")[1] == "/docker-entrypoint-initdb.d" for m in mounts), f"postgres must mount the init scripts: {mounts}"
    sql = pg_init_sql()
    assert re.search(rf"CREATE DATABASE {_ident(DATABASE)}", sql, re.I)
    for service in SERVICES:
        assert re.search(rf"CREATE ROLE {_ident(service)} [^;]*\bLOGIN\b[^;]*PASSWORD '[^']+'", sql, re.I), f"no LOGIN role {service}"
        assert re.search(rf"CREATE SCHEMA (?:IF NOT EXISTS )?{_ident(service)} AUTHORIZATION {_ident(service)}", sql, re.I), f"no schema {service} owned by {service}"
        assert re.search(rf"ALTER ROLE {_ident(service)} SET search_path (?:=|TO) {_ident(service)}", sql, re.I), f"no search_path for {service}"


@pytest.mark.parametrize("service", SERVICES)
def test_compose_database_url_uses_the_service_role(service: str) -> None:
    dsn = urlsplit(compose_env(compose_service(service))["HUB_DB__URL"])
    assert dsn.scheme in ("postgresql", "postgres")
    assert dsn.hostname == "postgres" and (dsn.port or 5432) == 5432, f"{service}: DSN must point at the postgres service"
    assert dsn.path == f"/{DATABASE}"
    assert unquote(dsn.username or "") == service, f"{service} must connect as its own role, not {dsn.username!r}"
    m = re.search(rf"CREATE ROLE {_ident(service)} [^;]*PASSWORD '([^']*)'", pg_init_sql(), re.I)
    assert m and unquote(dsn.password or "") == m.group(1), f"{service}: the password in HUB_DB__URL differs from the init script's"


def test_compose_mailpit_is_the_smtp_server_of_notifications(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = compose_service("mailpit")
    assert str(spec["image"]).startswith("axllent/mailpit")
    assert any(p.container == 8025 for p in compose_ports(spec)), "the Mailpit UI (8025) should be reachable from the host"
    env = compose_env(compose_service("notifications"))
    settings = load_settings("notifications", env, monkeypatch, "docker-compose.yml")
    smtp = getattr(settings, "smtp", None)
    assert smtp is not None, "NotificationsSettings has no `smtp` group (HUB_SMTP__*)"
    assert (smtp.host, smtp.port) == ("mailpit", 1025), f"notifications sends to {smtp.host}:{smtp.port}, not mailpit:1025"


# -- Dockerfile ------------------------------------------------------------------------------------


def test_dockerfile_stages() -> None:
    df = dockerfile()
    names = [s.name for s in df.stages]
    for required in ("base", "deps", *SERVICES):
        assert required in names, f"Dockerfile has no stage {required!r} (stages: {names})"
    assert len(names) == len(set(names)), f"duplicate stage names: {names}"
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim.*", df.image(df.stage("base"))), df.image(df.stage("base"))
    uv_copies = [a for a in df.stage("base").all("COPY") if "/uv" in a]
    assert uv_copies, "base must copy uv from the official image"
    source = re.search(r"--from=(\S+)", uv_copies[0]).group(1)  # type: ignore[union-attr]
    image = df.image(df.stage(source)) if source in names else source
    assert image.startswith("ghcr.io/astral-sh/uv:"), f"uv comes from {image}"
    assert "base" in [s.name for s in df.chain("deps")]


def test_dockerfile_deps_stage_syncs_one_locked_package_and_knows_every_member() -> None:
    deps = dockerfile().stage("deps")
    assert any(a.split("=")[0] == "SERVICE" for a in deps.all("ARG")), "deps needs ARG SERVICE"
    syncs = [a for a in deps.all("RUN") if "uv sync" in a]
    assert syncs, "deps runs no uv sync"
    for run in syncs:
        assert "--locked" in run and "--no-dev" in run, f"uv sync must be --locked --no-dev: {run}"
        assert re.search(r"--package\s+\"?hub-\$\{?SERVICE\}?\"?", run), f"uv sync must select --package hub-$SERVICE: {run}"
    # `uv sync --locked` validates uv.lock against every workspace member's pyproject.toml
    copied = " ".join(deps.all("COPY"))
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = sorted(
        p.relative_to(ROOT).as_posix()
        for pattern in root["tool"]["uv"]["workspace"]["members"]
        for p in ROOT.glob(f"{pattern}/pyproject.toml")
    )
    assert members
    missing = [m for m in members if m not in copied]
    assert not missing, f"deps must COPY the pyproject.toml of every workspace member before `uv sync --locked`: missing {missing}"
    assert "uv.lock" in copied


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_target_runs_the_service_as_non_root(service: str) -> None:
    df = dockerfile()
    chain = df.chain(service)
    port = SERVICES[service]

    def last(keyword: str) -> str | None:
        for stage in chain:  # nearest stage first; within a stage the last instruction wins
            values = stage.all(keyword)
            if values:
                return values[-1]
        return None

    user = last("USER")
    assert user is not None and user.split(":")[0] not in ("root", "0"), f"{service} runs as {user!r}"
    cmd = last("CMD")
    assert cmd is not None and _exec_form(cmd) == [f"hub-{service}"], f"{service}: CMD is {cmd}, expected [\"hub-{service}\"]"
    exposed = {int(p.split("/")[0]) for stage in chain for a in stage.all("EXPOSE") for p in a.split()}
    assert port in exposed, f"{service} exposes {exposed}, listens on {port}"
    healthcheck = last("HEALTHCHECK")
    assert healthcheck and "/healthz" in healthcheck and "urllib" in healthcheck, f"{service}: HEALTHCHECK {healthcheck}"
    env: dict[str, str] = {}
    for stage in reversed(chain):
        for a in stage.all("ENV"):
            env.update(_env_assignments(a))
    assert env.get("HUB_HTTP_PORT") in (None, str(port)), f"{service}: image sets HUB_HTTP_PORT={env.get('HUB_HTTP_PORT')}"
    assert env.get("HUB_HTTP_HOST") == "0.0.0.0", f"{service}: the image must listen on 0.0.0.0 (HUB_HTTP_HOST)"
    hub_env = {k for k in env if k.startswith("HUB_")}
    unknown = sorted(k for k in hub_env if k not in valid_env_names(settings_class(service)))
    assert not unknown, f"Dockerfile target {service} sets {unknown}, which the settings class does not read"


@pytest.mark.parametrize("service", SERVICES)
def test_service_declares_the_console_script_the_image_runs(service: str) -> None:
    pyproject = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
    scripts = pyproject.get("project", {}).get("scripts", {})
    assert scripts.get(f"hub-{service}") == f"hub_{service}.main:main", (
        f"services/{service}/pyproject.toml must declare [project.scripts] hub-{service} = \"hub_{service}.main:main\" "
        f"(the image's CMD); it declares {scripts}"
    )
    assert (ROOT / "services" / service / "src" / f"hub_{service}" / "main.py").exists(), f"hub_{service}/main.py is missing"


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    assert DOCKERIGNORE.exists(), ".dockerignore is missing at the repository root"
    patterns = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")}
    for required in (".venv", "var", "reports", ".git", "**/__pycache__"):
        assert required in patterns, f".dockerignore should exclude {required}"
    for needed in ("libs", "services", "uv.lock", "pyproject.toml"):
        assert needed not in patterns and f"/{needed}" not in patterns, f".dockerignore excludes {needed}, which the image needs"


# -- Kubernetes ------------------------------------------------------------------------------------


@functools.cache
def k8s_objects() -> list[dict[str, Any]]:
    files = sorted(K8S_DIR.glob("*.yaml")) + sorted(K8S_DIR.glob("*.yml")) + sorted((K8S_DIR / "examples").glob("*.yaml"))
    assert files, "deploy/k8s/ holds no manifests"
    objects = []
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), f"{path.name}: not a Kubernetes object: {doc!r:.200}"
            assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} without metadata.name"
            objects.append(doc)
    return objects


def k8s_find(kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
    for obj in k8s_objects():
        meta = obj["metadata"]
        if obj["kind"] == kind and meta["name"] == name and meta.get("namespace") == namespace:
            return obj
    return None


def k8s_deployment(service: str) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == "Deployment" and o["metadata"]["name"] in (service, f"hub-{service}")]
    assert len(found) == 1, f"deploy/k8s must hold exactly one Deployment for {service} (hub-{service}), found {len(found)}"
    return found[0]


def k8s_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: one container expected"
    return containers[0]


def k8s_env(deployment: dict[str, Any]) -> dict[str, str]:
    """The container's environment: envFrom ConfigMaps/Secrets (in order), then env."""
    namespace = deployment["metadata"].get("namespace")
    container = k8s_container(deployment)
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            ref = source["configMapRef"]["name"]
            obj = k8s_find("ConfigMap", ref, namespace)
            assert obj is not None, f"ConfigMap {ref} (namespace {namespace}) is not in deploy/k8s"
            data = obj.get("data") or {}
        else:
            ref = source["secretRef"]["name"]
            obj = k8s_find("Secret", ref, namespace)
            assert obj is not None, f"Secret {ref} (namespace {namespace}) is in neither deploy/k8s nor deploy/k8s/examples"
            data = dict(obj.get("stringData") or {})
            data.update({k: "x" for k in (obj.get("data") or {})})
        prefix = source.get("prefix", "")
        env.update({prefix + k: str(v) for k, v in data.items()})
    for item in container.get("env") or []:
        env[item["name"]] = str(item.get("value", "x"))
    return env


def _memory_bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 1e3, "M": 1e6, "G": 1e9, "": 1}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?|)", str(quantity))
    assert m, f"unexpected memory quantity {quantity!r}"
    return float(m.group(1)) * units[m.group(2)]


def _probe_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise AssertionError(f"probe port {port!r} names no container port")


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_service_env_is_what_its_settings_read(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    check_env(service, k8s_env(k8s_deployment(service)), monkeypatch, f"deploy/k8s ({service})")


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_deployment_probes_resources_and_service(service: str) -> None:
    deployment = k8s_deployment(service)
    container = k8s_container(deployment)
    port = int(k8s_env(deployment)["HUB_HTTP_PORT"])
    assert [int(p["containerPort"]) for p in container.get("ports") or []] == [port], f"{service}: containerPort != HUB_HTTP_PORT {port}"
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = (container.get(probe) or {}).get("httpGet")
        assert get, f"{service}: no {probe} httpGet"
        assert get["path"] == path, f"{service}: {probe} must GET {path}, not {get['path']}"
        assert _probe_port(container, get["port"]) == port, f"{service}: {probe} port is not {port}"
    if container.get("startupProbe"):
        assert _probe_port(container, container["startupProbe"]["httpGet"]["port"]) == port
    resources = container.get("resources") or {}
    for kind in ("requests", "limits"):
        assert (resources.get(kind) or {}).get("memory"), f"{service}: resources.{kind}.memory is not set"
    limit = _memory_bytes(resources["limits"]["memory"])
    assert 128 * 2**20 <= limit <= 512 * 2**20, f"{service}: memory limit {resources['limits']['memory']} is outside 128Mi-512Mi"
    assert _memory_bytes(resources["requests"]["memory"]) <= limit
    assert "image" in container and service in container["image"], f"{service}: image {container.get('image')!r}"

    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items(), f"{service}: the Deployment selector does not match its pod labels"
    security = pod["spec"].get("securityContext") or {}
    assert security.get("runAsNonRoot") is True, f"{service}: pods must set runAsNonRoot"

    namespace = deployment["metadata"].get("namespace")
    services = [o for o in k8s_objects() if o["kind"] == "Service" and o["metadata"].get("namespace") == namespace
                and (o["spec"].get("selector") or {}).items() <= labels.items() and o["spec"].get("selector")]
    assert len(services) == 1, f"{service}: exactly one Service must select its pods, found {len(services)}"
    targets = [_probe_port(container, p.get("targetPort", p["port"])) for p in services[0]["spec"]["ports"]]
    assert targets == [port], f"{service}: the Service targets {targets}, the pod listens on {port}"


@pytest.mark.parametrize("service", K8S_SCALED_OUT)
def test_k8s_scaled_out_services_run_several_replicas(service: str) -> None:
    replicas = k8s_deployment(service)["spec"].get("replicas", 1)
    assert replicas >= 2, f"{service} is the scale-out example: replicas should be >= 2, not {replicas}"


def test_k8s_config_maps_and_secrets_hold_only_known_settings() -> None:
    """Also the objects no Deployment references yet: a HUB_* key must be read by some service."""
    valid = frozenset().union(*(valid_env_names(settings_class(s)) for s in SERVICES))
    for obj in k8s_objects():
        if obj["kind"] not in ("ConfigMap", "Secret"):
            continue
        keys = set(obj.get("data") or {}) | set(obj.get("stringData") or {})
        unknown = sorted(k for k in keys if k.upper().startswith("HUB_") and k.upper() not in valid)
        assert not unknown, f"{obj['kind']} {obj['metadata']['name']} holds {unknown}, which no service reads"


# -- tokens ----------------------------------------------------------------------------------------


def test_compose_takes_the_tokens_from_the_host_with_no_published_default() -> None:
    """A default in the file would be a token anyone who read the repository knows (issue 15)."""
    text = COMPOSE_FILE.read_text()
    for name, service in (("HUB_LINKING_ADMIN_TOKEN", "linking"), ("HUB_OPERATOR_TOKEN", "notifications")):
        raw = str((compose_service(service).get("environment") or {}).get(name))
        assert re.fullmatch(r"\$\{" + name + r":\?[^}]+\}", raw), f"{service}: {name} must be ${{{name}:?...}}, is {raw}"
        assert text.count(name + ":-") == 0


def test_k8s_takes_the_tokens_from_secrets_only() -> None:
    """The manifests applied by `kubectl apply -f deploy/k8s/` carry no token; the example Secret's placeholder is refused."""
    from hub_platform.http import token_problem
    from pydantic import SecretStr

    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "ConfigMap":
                assert not {"HUB_LINKING_ADMIN_TOKEN", "HUB_OPERATOR_TOKEN"} & set(doc.get("data") or {}), path.name
    example = {d["metadata"]["name"]: d.get("stringData") or {}
               for d in yaml.safe_load_all((K8S_DIR / "examples" / "secrets.yaml").read_text()) if d}
    assert "HUB_LINKING_ADMIN_TOKEN" in example["hub-linking"]
    assert "HUB_OPERATOR_TOKEN" in example["hub-notifications"]
    for secret in (example["hub-linking"]["HUB_LINKING_ADMIN_TOKEN"], example["hub-notifications"]["HUB_OPERATOR_TOKEN"]):
        assert token_problem(SecretStr(secret)), "the example's placeholder must be one a service refuses to start with"


# -- published schemas, scaling, topics, network, monitoring (issue 17) ---------------------------------------------

K8S_VERSION = "1.33"
#: custom resources: kubernetes-validate ships no schema for them; checked below against their CRD models
K8S_CRD_KINDS = {"KafkaTopic", "ScaledObject", "TriggerAuthentication", "PodMonitor", "PrometheusRule"}
GRAFANA_DASHBOARD = K8S_DIR / "grafana" / "synchub.json"


def test_k8s_manifests_pass_kubernetes_validate_strict() -> None:
    """Every built-in object against the published OpenAPI schema of Kubernetes 1.33, unknown fields rejected."""
    import kubernetes_validate

    failures, crds = [], set()
    for obj in k8s_objects():
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            crds.add(obj["kind"])
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not failures, "\n".join(failures)
    assert crds <= K8S_CRD_KINDS, f"no schema for {crds - K8S_CRD_KINDS}: a misspelt kind or apiVersion?"


def _crd_model(kind: str) -> Any:
    """The model generated from the project's published CRD (cloudcoil packages), or None where no package ships it."""
    from cloudcoil.models.keda import v1alpha1 as keda
    from cloudcoil.models.prometheus_operator import v1 as monitoring

    return {"ScaledObject": keda.ScaledObject, "TriggerAuthentication": keda.TriggerAuthentication,
            "PodMonitor": monitoring.PodMonitor, "PrometheusRule": monitoring.PrometheusRule}.get(kind)


def _unknown_fields(given: Any, parsed: Any, path: str = "") -> list[str]:
    """Fields of `given` the model dropped (it ignores unknown ones): strict validation, as for built-in kinds."""
    if isinstance(given, dict) and isinstance(parsed, dict):
        out = [f"{path}.{k}" for k in given if k not in parsed]
        return out + [u for k in given if k in parsed for u in _unknown_fields(given[k], parsed[k], f"{path}.{k}")]
    if isinstance(given, list) and isinstance(parsed, list):
        return [u for i, (g, p) in enumerate(zip(given, parsed)) for u in _unknown_fields(g, p, f"{path}[{i}]")]
    return []


def test_k8s_custom_resources_match_their_published_crd_schemas() -> None:
    """KEDA and Prometheus Operator objects against models generated from their CRDs (unknown fields rejected).
    Strimzi ships no such package: KafkaTopic is checked field by field in test_k8s_kafka_topics_are_the_catalog."""
    checked = set()
    for obj in k8s_objects():
        model = _crd_model(obj["kind"])
        if model is None:
            continue
        try:
            parsed = model.model_validate(obj).model_dump(mode="json", by_alias=True, exclude_none=True)
        except ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} does not match its CRD:\n{exc}", pytrace=False)
        unknown = _unknown_fields(obj, parsed)
        assert not unknown, f"{obj['kind']} {obj['metadata']['name']}: fields the CRD does not have: {unknown}"
        checked.add(obj["kind"])
    assert checked == {"ScaledObject", "TriggerAuthentication", "PodMonitor", "PrometheusRule"}


def test_compose_file_passes_the_compose_spec() -> None:
    """The compose-spec JSON Schema bundled with check-jsonschema (no network)."""
    import subprocess
    import sys

    cli = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run([str(cli), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_k8s_generated_files_are_up_to_date() -> None:
    from hub_devstack import k8s

    for name, text in k8s.render(K8S_DIR).items():
        assert (K8S_DIR / name).read_text() == text, f"deploy/k8s/{name} is stale: run `python -m hub_devstack.k8s`"


def test_k8s_kafka_topics_are_the_catalog() -> None:
    from hub_schema.topics import CATALOG

    topics = {o["spec"]["topicName"]: o for o in k8s_objects() if o["kind"] == "KafkaTopic"}
    assert sorted(topics) == sorted(t.name for t in CATALOG)
    for t in CATALOG:
        obj = topics[t.name]
        assert obj["apiVersion"] == "kafka.strimzi.io/v1beta2" and obj["metadata"]["labels"].get("strimzi.io/cluster")
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"]), obj["metadata"]["name"]
        assert set(obj["spec"]) == {"topicName", "partitions", "replicas", "config"}
        assert obj["spec"]["partitions"] == t.partitions
        assert obj["spec"]["replicas"] == 3
        assert int(obj["spec"]["config"]["min.insync.replicas"]) == 2
    common = k8s_find("ConfigMap", "hub-common", "synchub")
    assert common is not None and common["data"]["HUB_KAFKA__CREATE_TOPICS"] == "false", \
        "with the topics as KafkaTopic resources, the services must not create them"


def _common_bootstrap() -> str:
    common = k8s_find("ConfigMap", "hub-common", "synchub")
    assert common is not None
    return str(common["data"]["HUB_KAFKA__BOOTSTRAP_SERVERS"])


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_service_scales_on_its_consumer_group_lag(service: str) -> None:
    from hub_devstack.k8s import subscribed_topics
    from hub_schema.topics import BY_NAME

    deployment = k8s_deployment(service)
    namespace = deployment["metadata"]["namespace"]
    scaled = [o for o in k8s_objects() if o["kind"] == "ScaledObject"
              and o["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]]
    assert len(scaled) == 1, f"{service}: one ScaledObject must target its Deployment, found {len(scaled)}"
    spec = scaled[0]["spec"]
    assert scaled[0]["metadata"]["namespace"] == namespace
    [trigger] = spec["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == k8s_env(deployment)["HUB_SERVICE_NAME"]
    assert trigger["metadata"]["bootstrapServers"] == _common_bootstrap()
    partitions = max(BY_NAME[t].partitions for t in subscribed_topics(service))
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions, \
        f"{service}: a replica beyond {partitions} partitions would own none"
    assert spec["minReplicaCount"] == deployment["spec"].get("replicas", 1)
    auth = k8s_find("TriggerAuthentication", trigger["authenticationRef"]["name"], namespace)
    assert auth is not None
    for ref in auth["spec"]["secretTargetRef"]:
        secret = k8s_find("Secret", ref["name"], namespace)
        assert secret is not None and ref["key"] in secret["stringData"], f"Secret {ref['name']} lacks {ref['key']}"

    pdbs = [o for o in k8s_objects() if o["kind"] == "PodDisruptionBudget" and o["metadata"]["namespace"] == namespace
            and o["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()]
    assert len(pdbs) == 1, f"{service}: one PodDisruptionBudget must select its pods"
    assert pdbs[0]["spec"].get("maxUnavailable") == 1


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_pods_get_no_service_account_token(service: str) -> None:
    assert k8s_deployment(service)["spec"]["template"]["spec"].get("automountServiceAccountToken") is False


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    if not (selector.get("matchLabels") or {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions") or []:
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _allowed_egress_ports(labels: dict[str, str]) -> set[int]:
    return {int(p["port"]) for o in k8s_objects() if o["kind"] == "NetworkPolicy" and _selects(o, labels)
            for rule in o["spec"].get("egress") or [] for p in rule.get("ports") or []}


def test_k8s_network_is_default_deny() -> None:
    deny = [o for o in k8s_objects() if o["kind"] == "NetworkPolicy" and o["spec"]["podSelector"] == {}
            and set(o["spec"]["policyTypes"]) == {"Ingress", "Egress"} and not o["spec"].get("ingress") and not o["spec"].get("egress")]
    assert deny, "no default-deny NetworkPolicy (empty podSelector, both policy types, no rules)"


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_network_policy_lets_through_what_the_service_uses(service: str) -> None:
    deployment = k8s_deployment(service)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    env = k8s_env(deployment)
    egress = _allowed_egress_ports(labels)
    wanted = {53, int(env["HUB_KAFKA__BOOTSTRAP_SERVERS"].rsplit(":", 1)[1]), urlsplit(env["HUB_OBS__OTEL_ENDPOINT"]).port}
    db = urlsplit(env["HUB_DB__URL"]).port if env["HUB_DB__URL"] != "x" else None
    wanted |= {db or 5432}
    if "HUB_SMTP__PORT" in env:
        wanted.add(int(env["HUB_SMTP__PORT"]))
    assert wanted <= egress, f"{service}: egress to ports {sorted(wanted - egress)} is not allowed"
    scrape = [o for o in k8s_objects() if o["kind"] == "NetworkPolicy" and _selects(o, labels)
              and any(p["port"] == "http" for r in o["spec"].get("ingress") or [] for p in r.get("ports") or [])]
    assert scrape, f"{service}: nothing lets Prometheus reach /metrics on the named port http"


def _exported_series() -> set[str]:
    """Names of the series the services export (counters with _total, histograms with _bucket/_sum/_count)."""
    from hub_platform import consumer, metrics  # noqa: F401 - registers its metrics

    for service in SERVICES:
        importlib.import_module(f"hub_{service}.main")
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {f.name + s for f in metrics.REGISTRY.collect() for s in suffixes.get(f.type, ("",))}


def test_k8s_alerts_and_dashboard_use_series_the_services_export() -> None:
    exported = _exported_series()
    rule = k8s_find("PrometheusRule", "synchub", "synchub")
    assert rule is not None
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    panel_exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for where, texts in (("PrometheusRule", exprs), ("dashboard", panel_exprs)):
        used = {m for e in texts for m in re.findall(r"\bhub_[a-z_]+\b", e)}
        assert used and used <= exported, f"{where} uses {sorted(used - exported)}, which no service exports"
    alerting = " ".join(exprs)
    for needed in ("hub_consumer_lag", "hub_events_dead_lettered_total", "hub_outbox_backlog", "kube_pod_status_ready"):
        assert needed in alerting, f"no alert on {needed}"
    assert {"hub_consumer_lag", "hub_events_processed_total", "hub_outbox_backlog"} <= \
        {m for e in panel_exprs for m in re.findall(r"\bhub_[a-z_]+\b", e)}
