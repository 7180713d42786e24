"""The workspace's shape: every package imports only what it declares, and each has the same layout."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.parent for p in ROOT.glob("*/*/pyproject.toml") if p.parent.parent.name in ("libs", "services", "tools"))
SERVICES = ("identity", "linking", "tasks", "notifications")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(pyproject: Path) -> set[str]:
    data = tomllib.loads(pyproject.read_text())
    deps = data["project"].get("dependencies", [])
    return {_normalise(re.split(r"[\s<>=!~\[;]", d, maxsplit=1)[0]) for d in deps}


def _imports(src: Path) -> set[str]:
    found: set[str] = set()
    for file in src.rglob("*.py"):
        tree = ast.parse(file.read_text(), filename=str(file))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_every_import_is_declared(package: Path) -> None:
    own = {p.name for p in (package / "src").iterdir() if p.is_dir()}
    declared = _declared(package / "pyproject.toml")
    dists = packages_distributions()
    undeclared = []
    for module in sorted(_imports(package / "src") - own):
        if module in sys.stdlib_module_names or module == "__future__":
            continue
        owners = {_normalise(d) for d in dists.get(module, [])}
        if module.startswith("hub_"):
            owners.add(_normalise(module.replace("_", "-")))
        if not owners & declared:
            undeclared.append(f"{module} (from {sorted(owners) or 'unknown distribution'})")
    assert not undeclared, f"{package.name} imports what its pyproject.toml does not declare: {undeclared}"


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_the_same_shape(service: str) -> None:
    base = ROOT / "services" / service
    pkg = base / "src" / f"hub_{service}"
    for path in (pkg / "settings.py", pkg / "domain.py", pkg / "storage.py", pkg / "handlers.py", pkg / "main.py",
                 base / "migrations", base / "tests"):
        package = path.with_suffix("") / "__init__.py"  # a module split by aggregate is a package (issue 16)
        assert path.exists() or package.exists(), f"services/{service} lacks {path.relative_to(base)}"
    assert list((base / "migrations").glob("*.sql")), f"services/{service} has no migrations"
    data = tomllib.loads((base / "pyproject.toml").read_text())
    assert data["project"]["scripts"][f"hub-{service}"] == f"hub_{service}.main:main"
    assert data["project"]["entry-points"]["hub.services"][service] == f"hub_{service}.main:build"


@pytest.mark.parametrize("connector", ("crm-connector", "pm-connector"))
def test_every_connector_has_the_service_shape(connector: str) -> None:
    """The Zoho connectors are platform services too (own schema, group, script), started instead of the sandbox."""
    base = ROOT / "services" / connector
    pkg = base / "src" / f"hub_{connector.replace('-', '_')}"
    for path in (pkg / "settings.py", pkg / "domain.py", pkg / "storage.py", pkg / "handlers.py", pkg / "main.py",
                 base / "migrations", base / "tests"):
        assert path.exists(), f"services/{connector} lacks {path.relative_to(base)}"
    data = tomllib.loads((base / "pyproject.toml").read_text())
    assert data["project"]["scripts"][f"hub-{connector}"] == f"hub_{connector.replace('-', '_')}.main:main"


def test_topic_catalog_names_every_services_subscriptions() -> None:
    """The catalog is documentation people rely on: it must say who consumes what, truthfully."""
    from importlib.metadata import entry_points

    from hub_platform.settings import ServiceSettings
    from hub_schema.topics import BY_NAME, TopicNames

    names = TopicNames("")
    wrong = []
    for ep in entry_points(group="hub.services"):
        if ep.name == "echo":
            continue
        service = ep.load()(ServiceSettings(service_name=ep.name))
        for physical in service.subscribed:
            topic = BY_NAME[names.logical(physical)]
            if ep.name not in topic.consumers:
                wrong.append(f"{ep.name} consumes {topic.name} but the catalog lists {topic.consumers}")
        for model in service.emits:
            topic = BY_NAME[model.TOPIC]
            if ep.name not in topic.producers and "every service" not in topic.producers:
                wrong.append(f"{ep.name} publishes {model.EVENT_TYPE} on {topic.name} but the catalog lists {topic.producers}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_ship_inside_the_wheel_and_are_found_there(service: str, tmp_path: Path) -> None:
    """An installed service (not an editable checkout) must find its migrations in its own package."""
    import shutil

    from hub_platform.db import service_migrations

    project = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
    force = project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert force == {"migrations": f"hub_{service}/migrations"}
    source = ROOT / "services" / service / "migrations"
    # the source checkout: found next to src/
    assert service_migrations(str(ROOT / "services" / service / "src" / f"hub_{service}" / "main.py"), service) == source
    # the installed layout the wheel produces: site-packages/hub_<service>/{main.py, migrations/}
    installed = tmp_path / "site-packages" / f"hub_{service}"
    installed.mkdir(parents=True)
    (installed / "main.py").write_text("")
    shutil.copytree(source, installed / "migrations")
    assert service_migrations(str(installed / "main.py"), service) == installed / "migrations"
    # and nowhere: a clear error naming both places
    (tmp_path / "empty" / "pkg").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no migrations"):
        service_migrations(str(tmp_path / "empty" / "pkg" / "main.py"), service)


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in ROOT.glob("services/*/migrations")))
def test_migration_versions_are_unique_with_the_platforms(folder: str) -> None:
    """dbmate applies the platform's and a service's migrations as one list keyed by version: two files with
    one version (easy after merging branches) fail every start with a duplicate key in schema_migrations."""
    platform = ROOT / "libs/platform/src/hub_platform/migrations"
    files = [*platform.glob("*.sql"), *(ROOT / "services" / folder / "migrations").glob("*.sql")]
    versions = [f.name.split("_", 1)[0] for f in files]
    assert sorted(v for v in set(versions) if versions.count(v) > 1) == [], sorted(f.name for f in files)
