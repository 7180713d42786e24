"""hub_platform.http without servers: who a caller is, token rules, input models, body limit, paging."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import httpx
import pytest
from fastapi import FastAPI, Query
from pydantic import SecretStr
from starlette.middleware import Middleware

from hub_platform.http import (
    MAX_PAGE_SIZE, AnyOf, BodySizeLimit, Caller, HttpError, HubApi, Input, Page, TokenAuth, app_of, is_loopback,
    paged, token_problem,
)

OPERATOR = "o" * 40


class Body(Input):
    name: str


def app(token: str = OPERATOR, max_bytes: int = 1024, *, any_of: bool = False) -> FastAPI:
    auth = TokenAuth(lambda: SecretStr(token), "operator", "HUB_OPERATOR_TOKEN")
    auth = AnyOf(TokenAuth(lambda: SecretStr(""), "admin", "HUB_ADMIN_TOKEN"), auth) if any_of else auth
    api = HubApi()

    @api.post("/echo/{colour}", auth=auth)
    async def echo(caller: Caller, colour: Literal["red", "blue"], query: Annotated[Page, Query()], body: Body) -> dict[str, Any]:
        return {"kind": caller.kind, "limit": query.limit, "name": body.name, "colour": colour}

    @api.get("/open", auth=None)
    async def open_() -> dict[str, Any]:
        return {"open": True}

    return app_of(api.routes, openapi_url="/openapi.json", middleware=[Middleware(BodySizeLimit, max_bytes=max_bytes)])


async def call(a: FastAPI, path: str = "/echo/red", **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t") as http:
        return await http.post(path, **kwargs)  # type: ignore[arg-type]


async def test_credentials_are_checked_before_the_input() -> None:
    assert (await call(app(), json={"bad": 1})).status_code == 401
    assert (await call(app(), "/echo/green?limit=-1", content=b"{not json")).status_code == 401
    ok = await call(app(), json={"name": "x"}, params={"limit": 5}, headers={"Authorization": f"Bearer {OPERATOR}"})
    assert ok.status_code == 200 and ok.json() == {"kind": "operator", "limit": 5, "name": "x", "colour": "red"}


async def test_an_empty_configured_token_accepts_no_one() -> None:
    for headers in ({}, {"Authorization": "Bearer"}, {"X-Hub-Service-Key": ""}):
        r = await call(app(token=""), json={"name": "x"}, headers=headers)
        assert r.status_code == 401 and "not set" in r.json()["detail"]


async def test_any_of_accepts_the_first_way_that_accepts_and_names_them_all_otherwise() -> None:
    ok = await call(app(any_of=True), json={"name": "x"}, headers={"Authorization": f"Bearer {OPERATOR}"})
    assert ok.status_code == 200 and ok.json()["kind"] == "operator"
    refused = await call(app(any_of=True), json={"name": "x"}, headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401 and "admin token" in refused.json()["detail"] and "operator token" in refused.json()["detail"]


@pytest.mark.parametrize("params", [{"limit": MAX_PAGE_SIZE + 1}, {"limit": 0}, {"after": -1}, {"org_id": "x"}])
async def test_bad_query_is_a_422_naming_the_field(params: dict[str, object]) -> None:
    r = await call(app(), json={"name": "x"}, params=params, headers={"Authorization": f"Bearer {OPERATOR}"})
    assert r.status_code == 422
    assert r.json()["problems"][0]["field"] in params and r.json()["problems"][0]["where"] == "query"


async def test_bad_path_body_or_a_repeated_parameter_is_a_422_naming_it() -> None:
    headers = {"Authorization": f"Bearer {OPERATOR}"}
    r = await call(app(), "/echo/green", json={"name": "x"}, headers=headers)
    assert r.status_code == 422 and r.json()["problems"][0] == {"where": "path", "field": "colour",
                                                               "problem": r.json()["problems"][0]["problem"]}
    r = await call(app(), json={"name": "x", "extra": 1}, headers=headers)
    assert r.status_code == 422 and r.json()["problems"][0]["field"] == "extra"
    r = await call(app(), content=b"{not json", headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["problems"][0]["where"] == "body"
    r = await call(app(), "/echo/red?limit=1&limit=500", json={"name": "x"}, headers=headers)
    assert r.status_code == 422 and "twice" in r.json()["detail"]


async def test_the_generated_openapi_names_the_auth_of_every_operation() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app()), base_url="http://t") as http:
        doc = (await http.get("/openapi.json")).json()
    assert doc["paths"]["/echo/{colour}"]["post"]["security"] == [{"operatorToken": []}]
    assert doc["components"]["securitySchemes"]["operatorToken"]["scheme"] == "bearer"
    assert doc["paths"]["/open"]["get"]["security"] == []


def test_a_route_cannot_be_attached_without_saying_its_auth() -> None:
    api = HubApi()
    with pytest.raises(TypeError):
        api.get("/x")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="public"):
        api.get("/x", auth=None)(_takes_a_caller)


async def _takes_a_caller(caller: Caller) -> dict[str, Any]:
    return {}


async def test_bodies_over_the_limit_are_413_declared_or_streamed() -> None:
    headers = {"Authorization": f"Bearer {OPERATOR}"}
    assert (await call(app(), content=b"x" * 2000, headers=headers)).status_code == 413

    async def stream():  # type: ignore[no-untyped-def]
        for _ in range(4):
            yield b"y" * 512

    assert (await call(app(), content=stream(), headers=headers)).status_code == 413


def test_token_rules() -> None:
    assert token_problem(SecretStr("")) == "empty"
    assert token_problem(SecretStr("local-linking-admin-token")) == "a published default"
    assert token_problem(SecretStr("x" * 31)) and token_problem(SecretStr("x" * 32)) is None
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "hub.example.com", ""))


def test_paging_gives_the_next_cursor_only_when_there_is_more() -> None:
    rows = [{"id": i} for i in (4, 5, 6)]
    assert paged(rows, Page(limit=2), lambda r: r["id"]) == {"items": rows[:2], "next": 5, "limit": 2}
    assert paged(rows, Page(limit=3), lambda r: r["id"])["next"] is None


def test_an_org_acts_only_on_its_own_org() -> None:
    Caller("org", "org-a").require_org("org-a")
    Caller("operator").require_org("org-b")
    with pytest.raises(HttpError) as err:
        Caller("org", "org-a").require_org("org-b")
    assert err.value.status == 403
