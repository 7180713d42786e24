"""Every HTTP surface is attached one way (hub_platform.http.HubApi), and its generated OpenAPI says who may call.

The documents are generated from the routes (the committed copies in contracts/openapi are checked by
test_contracts.py); here: every operation declares its security (a scheme the document defines, or an
explicit empty list for the common endpoints that are public on purpose), and no route of any service
bypasses the guarded route class (which decides the caller before reading the input).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from hub_platform.contracts import service_builders
from hub_platform.http import GuardedRoute
from hub_platform.settings import ServiceSettings

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts" / "openapi"
PUBLIC = {"/healthz", "/readyz", "/metrics", "/asyncapi.json"}


@functools.cache
def services() -> dict[str, Any]:
    from hub_sandbox.main import build as sandbox

    built = {name: ep.load()(ServiceSettings(service_name=name)) for name, ep in service_builders().items()}
    return {**built, "sandbox": sandbox()}


@pytest.mark.parametrize("name", ["identity", "linking", "tasks", "notifications"])
def test_every_operation_declares_its_auth(name: str) -> None:
    doc = services()[name].openapi()
    schemes = set(doc.get("components", {}).get("securitySchemes", {}))
    operations = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]
    assert any(path not in PUBLIC for path, _, _ in operations), "a service with an API documents it"
    for path, method, op in operations:
        assert "security" in op, f"{method.upper()} {path} does not say who may call it"
        if path in PUBLIC:
            assert op["security"] == [], f"{path} is public on purpose"
            continue
        named = {scheme for requirement in op["security"] for scheme in requirement}
        assert named and named <= schemes, f"{method.upper()} {path}: {op['security']} not in {schemes}"
        assert "401" in op["responses"], f"{method.upper()} {path} documents its refusal"


def test_the_committed_openapi_documents_are_the_generated_ones() -> None:
    generated = {name: s.openapi() for name, s in services().items() if name != "sandbox" and s.has_api}
    committed = {p.stem: json.loads(p.read_text()) for p in CONTRACTS.glob("*.json")}
    assert committed == generated, "contracts/openapi is out of date: run `make contracts`"


def test_every_route_of_every_service_is_attached_the_one_way() -> None:
    for name, service in services().items():
        for route in service.http_app().routes:
            if isinstance(route, APIRoute):
                assert isinstance(route, GuardedRoute), (name, route.path)
            else:  # only FastAPI's own document route, served when the service has an API
                assert route.path == "/api/v1/openapi.json", (name, route.path)
