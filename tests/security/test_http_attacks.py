"""Attacks on the hub's HTTP APIs, over real HTTP against the running services (issue 15, HTTP part).

One hub (the four services and the sandbox, on the real broker and database) serves the whole
module; two orgs get service keys from linking's admin endpoint, and tasks and notifications
learn them from linking.service_key.rotated as they would in production. Each test is one
attack; its marker says what the attacker tries and what the hub does, and docs/security.md
lists them (`make security-doc`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from hub_devstack.e2e import LINKING_ADMIN_TOKEN, OPERATOR_TOKEN, HubStack, hub_stack
from hub_devstack.pytest_plugin import SERVICES, HubEnv, TestKafka, free_port
from hub_schema import make_event
from hub_schema.events.notifications import NotificationPreferencesChange

pytestmark = pytest.mark.integration

TASK_PROBE = "/api/v1/history?pm_task_id=probe"
PREFS = "/api/v1/orgs/{org}/preferences/{email}"
EMAIL = "hanako@acme.example"


@dataclass
class Hub:
    stack: HubStack
    keys: dict[str, str]
    task_of: dict[str, uuid.UUID]


@pytest.fixture(scope="module")
async def hub(test_kafka: TestKafka, pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hub]:
    from hub_devstack.provision import create_database, drop_database, provision_service

    database = f"t_{uuid.uuid4().hex[:10]}"
    await create_database(pg_admin_dsn, database)
    env = HubEnv(test_kafka.bootstrap, pg_admin_dsn, database, f"t{uuid.uuid4().hex[:8]}.", kafka=test_kafka)
    for service in SERVICES:
        env.dsns[service] = await provision_service(pg_admin_dsn, database, service, service)
    await test_kafka.secure(env.topic_prefix)
    try:
        async with hub_stack(env, tmp_path_factory.mktemp("attacks")) as stack:
            keys = {org: await stack.new_service_key(org) for org in ("org-a", "org-b")}
            for key in keys.values():
                await stack.wait_key_accepted("tasks", key, TASK_PROBE)
                await stack.wait_key_accepted("notifications", key, PREFS.format(org="org-a", email=EMAIL))
            task_of = {org: await _task_with_history(stack, org) for org in keys}
            yield Hub(stack, keys, task_of)
    finally:
        with contextlib.suppress(Exception):
            await test_kafka.unsecure(env.topic_prefix)
        with contextlib.suppress(Exception):
            await drop_database(pg_admin_dsn, database)


async def _task_with_history(stack: HubStack, org: str) -> uuid.UUID:
    """A mirrored task of `org` with one decision in its history (written as the tasks service writes it)."""
    hub_task_id = uuid.uuid4()
    conn = await stack.db("tasks")
    try:
        await conn.execute(
            "INSERT INTO task_mappings (hub_task_id, org_id, origin, portal_id, project_id, pm_task_id, record_type, "
            "record_id, crm_task_id, state) VALUES ($1, $2, 'pm', 'portal-1', 'proj-1', $3, 'account', 'acc-1', $4, '{}')",
            hub_task_id, org, f"pt-{org}", f"ct-{org}")
        await conn.execute(
            "INSERT INTO task_decisions (org_id, hub_task_id, pm_task_id, crm_task_id, side, decision, reason_code, "
            "reason) VALUES ($1, $2, $3, $4, 'pm', 'mirrored', 'created', $5)",
            org, hub_task_id, f"pt-{org}", f"ct-{org}", f"secret plans of {org}")
    finally:
        await conn.close()
    return hub_task_id


# -- no credentials ---------------------------------------------------------------------------------------


@pytest.mark.attack("read a task's sync history, or any org's history, with no credentials",
                    outcome="401 from tasks; nothing about the task is returned")
async def test_task_history_needs_a_service_key(hub: Hub) -> None:
    s = hub.stack
    for path in (f"/api/v1/tasks/{hub.task_of['org-a']}/history", "/api/v1/history?pm_task_id=pt-org-a",
                 "/api/v1/history?org_id=org-a&pm_task_id=pt-org-a"):
        for token in (None, "", "hk_not-a-key"):
            r = await s.api("tasks", "GET", path, token=token)
            assert r.status_code == 401, (path, token, r.text)
            assert "org-a" not in r.text and "secret plans" not in r.text


@pytest.mark.attack("read the delivery log (every org's recipients), retry a mail or read opt-outs with no credentials",
                    outcome="401 from notifications")
async def test_notifications_api_needs_credentials(hub: Hub) -> None:
    s = hub.stack
    calls = [("GET", f"/api/v1/deliveries?recipient={EMAIL}"), ("POST", f"/api/v1/deliveries/{uuid.uuid4()}/retry"),
             ("GET", PREFS.format(org="org-a", email=EMAIL)), ("PUT", PREFS.format(org="org-a", email=EMAIL))]
    for method, path in calls:
        r = await s.api("notifications", method, path, json={"opted_out": []} if method == "PUT" else None)
        assert r.status_code == 401, (method, path, r.text)


@pytest.mark.attack("read the Projects tab API with no service key or a made-up one",
                    outcome="401 from linking")
async def test_linking_read_api_needs_a_service_key(hub: Hub) -> None:
    for token in (None, "", "hk_made-up", LINKING_ADMIN_TOKEN):
        r = await hub.stack.api("linking", "GET", "/api/v1/records/account/acc-1/projects", token=token)
        assert r.status_code == 401, (token, r.text)


@pytest.mark.attack("read an org's permission profile and its history from identity with no credentials, a made-up "
                    "token or an org's service key",
                    outcome="401 from identity; only the operator token opens it")
async def test_identity_profile_api_needs_the_operator_token(hub: Hub) -> None:
    path = "/v1/orgs/org-a/permission-profile"
    for token in (None, "", "made-up-operator-token", hub.keys["org-a"], LINKING_ADMIN_TOKEN):
        r = await hub.stack.api("identity", "GET", path, token=token)
        assert r.status_code == 401, (token, r.text)
        assert "profile" not in r.json()
    assert (await hub.stack.api("identity", "GET", path, token=OPERATOR_TOKEN)).status_code == 200


# -- another org's key ---------------------------------------------------------------------------------------


@pytest.mark.attack("org B reads org A's task history with its own valid key (by hub task id, or naming org A)",
                    outcome="404 for A's task id (its existence is not revealed); an org_id parameter is refused (422); "
                            "B's own queries return only B's decisions")
async def test_another_orgs_key_sees_nothing_of_the_org(hub: Hub) -> None:
    s, b_key = hub.stack, hub.keys["org-b"]
    r = await s.api("tasks", "GET", f"/api/v1/tasks/{hub.task_of['org-a']}/history", token=b_key)
    assert r.status_code == 404 and "secret plans" not in r.text
    r = await s.api("tasks", "GET", "/api/v1/history?org_id=org-a&pm_task_id=pt-org-a", token=b_key)
    assert r.status_code == 422
    r = await s.api("tasks", "GET", "/api/v1/history?pm_task_id=pt-org-a", token=b_key)
    assert r.status_code == 200 and r.json()["decisions"] == [] and r.json()["org_id"] == "org-b"
    own = await s.api("tasks", "GET", f"/api/v1/tasks/{hub.task_of['org-b']}/history", token=b_key)
    assert own.status_code == 200 and [d["org_id"] for d in own.json()["decisions"]] == ["org-b"]


@pytest.mark.attack("org B's key calls the operator endpoints of notifications (delivery log, retry)",
                    outcome="401: a service key is not an operator token")
async def test_an_org_key_is_not_an_operator_token(hub: Hub) -> None:
    s = hub.stack
    r = await s.api("notifications", "GET", f"/api/v1/deliveries?recipient={EMAIL}", token=hub.keys["org-b"])
    assert r.status_code == 401
    r = await s.api("notifications", "POST", f"/api/v1/deliveries/{uuid.uuid4()}/retry", token=hub.keys["org-b"])
    assert r.status_code == 401
    r = await s.api("notifications", "GET", f"/api/v1/deliveries?recipient={EMAIL}", token=OPERATOR_TOKEN)
    assert r.status_code == 200


@pytest.mark.attack("org B changes (or reads) org A's opt-out for an address both orgs mail, over HTTP",
                    outcome="403 for B on A's path; A's opt-out is unchanged; B's own opt-out is B's alone")
async def test_an_org_cannot_change_another_orgs_opt_out(hub: Hub) -> None:
    s, a_key, b_key = hub.stack, hub.keys["org-a"], hub.keys["org-b"]
    a_path, b_path = PREFS.format(org="org-a", email=EMAIL), PREFS.format(org="org-b", email=EMAIL)
    assert (await s.api("notifications", "PUT", a_path, token=a_key, json={"opted_out": ["import_outcome"]})).status_code == 200
    r = await s.api("notifications", "PUT", a_path, token=b_key, json={"opted_out": []})
    assert r.status_code == 403
    assert (await s.api("notifications", "GET", a_path, token=b_key)).status_code == 403
    assert (await s.api("notifications", "GET", a_path, token=a_key)).json()["opted_out"] == ["import_outcome"]
    assert (await s.api("notifications", "GET", b_path, token=b_key)).json()["opted_out"] == []


@pytest.mark.attack("org B sends hub.notification_preferences.change for an address org A opted out",
                    outcome="only B's (org, address) opt-out changes; A's stays as A set it")
async def test_a_preference_request_changes_only_the_senders_org(hub: Hub) -> None:
    from aiokafka import AIOKafkaProducer

    s, email = hub.stack, "jiro@shared.example"
    a_path, b_path = PREFS.format(org="org-a", email=email), PREFS.format(org="org-b", email=email)
    assert (await s.api("notifications", "PUT", a_path, token=OPERATOR_TOKEN,
                        json={"opted_out": ["import_outcome"]})).status_code == 200
    change = make_event(NotificationPreferencesChange(
        request_id=uuid.uuid4(), acting_user_id="u-b", email=email, kinds=["import_outcome"], opted_out=False,
        changed_at=datetime.now(timezone.utc)), org_id="org-b", entity_key="org:org-b", producer="crm-ui", origin="crm")
    also = make_event(NotificationPreferencesChange(
        request_id=uuid.uuid4(), acting_user_id="u-b", email="marker@shared.example", kinds=["import_outcome"],
        opted_out=True, changed_at=datetime.now(timezone.utc)), org_id="org-b", entity_key="org:org-b",
        producer="crm-ui", origin="crm")
    producer = AIOKafkaProducer(**s.env.client_options("ui"))
    await producer.start()
    try:
        for env in (change, also):  # same key, same partition: `also` is applied after `change`
            from hub_schema import encode

            await producer.send_and_wait(s.env.topic("hub.requests"), encode(env), key=env.entity_key.encode())
    finally:
        await producer.stop()
    marker = PREFS.format(org="org-b", email="marker@shared.example")
    await _until(lambda: s.api("notifications", "GET", marker, token=OPERATOR_TOKEN),
                 lambda r: r.json()["opted_out"] == ["import_outcome"])
    assert (await s.api("notifications", "GET", a_path, token=OPERATOR_TOKEN)).json()["opted_out"] == ["import_outcome"]
    assert (await s.api("notifications", "GET", b_path, token=OPERATOR_TOKEN)).json()["opted_out"] == []


# -- rotation ------------------------------------------------------------------------------------------------


@pytest.mark.attack("keep using an org's old service key after the org rotated it",
                    outcome="401 from linking at once, and from tasks and notifications as soon as they have applied "
                            "the rotation (the new key works there first)")
async def test_an_old_key_stops_working_after_rotation(hub: Hub) -> None:
    s = hub.stack
    old = await s.new_service_key("org-r")
    await s.wait_key_accepted("tasks", old, TASK_PROBE)
    await s.wait_key_accepted("notifications", old, PREFS.format(org="org-r", email=EMAIL))
    new = await s.new_service_key("org-r")
    assert (await s.api("linking", "GET", "/api/v1/records/account/x/projects", token=old)).status_code == 401
    assert (await s.api("linking", "GET", "/api/v1/records/account/x/projects", token=new)).status_code == 200
    await s.wait_key_accepted("tasks", new, TASK_PROBE)
    await s.wait_key_accepted("notifications", new, PREFS.format(org="org-r", email=EMAIL))
    assert (await s.api("tasks", "GET", TASK_PROBE, token=old)).status_code == 401
    assert (await s.api("notifications", "GET", PREFS.format(org="org-r", email=EMAIL), token=old)).status_code == 401


# -- the admin token ------------------------------------------------------------------------------------------


@pytest.mark.attack("mint a service key for any org with no token, an empty bearer, a wrong token, or an org's key",
                    outcome="401; no key is minted")
async def test_minting_a_key_needs_the_admin_token(hub: Hub) -> None:
    s = hub.stack
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer wrong"},
                    {"Authorization": f"Bearer {hub.keys['org-a']}"}, {"X-Hub-Service-Key": ""}):
        r = await s.api("linking", "POST", "/api/v1/orgs/org-a/service-key", headers=headers)
        assert r.status_code == 401, (headers, r.text)
    # org-a's key still works: nothing was rotated
    assert (await s.api("linking", "GET", "/api/v1/records/account/x/projects", token=hub.keys["org-a"])).status_code == 200


@pytest.mark.attack("a linking started with an empty HUB_LINKING_ADMIN_TOKEN: call the mint endpoint with no header "
                    "(compare_digest(b'', b'') is true)",
                    outcome="401: an empty configured token accepts no one")
async def test_an_empty_admin_token_accepts_no_one(hub: Hub) -> None:
    from hub_linking.main import build
    from hub_linking.settings import LinkingSettings

    service = build(hub.stack.env.settings(LinkingSettings, "linking", HUB_LINKING_ADMIN_TOKEN=""))
    async with _serve(service.http_app()) as url, httpx.AsyncClient(base_url=url) as http:
        for headers in ({}, {"Authorization": "Bearer"}, {"X-Hub-Service-Key": ""}):
            r = await http.post("/api/v1/orgs/org-a/service-key", headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert "not set" in r.json()["detail"]


@pytest.mark.attack("deploy linking on a reachable address with the published default, an empty or a short admin token",
                    outcome="the service refuses to start (exit status 1, the reason in its log); nothing listens")
@pytest.mark.parametrize("token", ["local-linking-admin-token", "", "short-but-not-empty"])
def test_a_weak_admin_token_off_loopback_stops_the_service(token: str, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "hub-linking"
    port = free_port()
    env = {**os.environ, "HUB_HTTP_HOST": "0.0.0.0", "HUB_HTTP_PORT": str(port), "HUB_LINKING_ADMIN_TOKEN": token,
           "HUB_DB__URL": "postgresql://nobody@127.0.0.1:1/none", "HUB_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    done = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "InsecureTokenError" in done.stderr and "HUB_LINKING_ADMIN_TOKEN" in done.stderr


# -- size and paging -----------------------------------------------------------------------------------------


@pytest.mark.attack("send a request body of several megabytes (declared, or chunked without a length)",
                    outcome="413 before any endpoint reads it; the service keeps answering")
async def test_an_oversized_body_is_refused(hub: Hub) -> None:
    s = hub.stack
    big = json.dumps({"opted_out": ["import_outcome"] * 400_000}).encode()
    r = await s.api("notifications", "PUT", PREFS.format(org="org-a", email=EMAIL), token=hub.keys["org-a"],
                    content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b" " * 65536

    r = await s.api("linking", "POST", "/api/v1/orgs/org-a/service-key", token=LINKING_ADMIN_TOKEN, content=chunks())
    assert r.status_code == 413
    assert (await s.api("notifications", "GET", "/readyz")).status_code == 200


@pytest.mark.attack("ask a list endpoint for a huge page (limit=10000000) or a negative cursor",
                    outcome="422 naming the limit (pages hold at most 500 items)")
async def test_a_huge_page_size_is_refused(hub: Hub) -> None:
    s = hub.stack
    for service, path, token in (("tasks", "/api/v1/history?pm_task_id=pt-org-a&limit=10000000", hub.keys["org-a"]),
                                 ("tasks", f"/api/v1/tasks/{hub.task_of['org-a']}/history?after=-1", hub.keys["org-a"]),
                                 ("notifications", f"/api/v1/deliveries?recipient={EMAIL}&limit=10000000", OPERATOR_TOKEN)):
        r = await s.api(service, "GET", path, token=token)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["problems"][0]["field"] in ("limit", "after")


@pytest.mark.attack("read tenant data from the open endpoints (/healthz, /readyz, /metrics, /asyncapi.json, /api/v1/openapi.json)",
                    outcome="they answer without credentials and name no org, task or address")
async def test_open_endpoints_hold_no_tenant_data(hub: Hub) -> None:
    for service in ("linking", "tasks", "notifications"):
        for path in ("/healthz", "/readyz", "/metrics", "/asyncapi.json", "/api/v1/openapi.json"):
            r = await hub.stack.api(service, "GET", path)
            assert r.status_code == 200, (service, path)
            for secret in ("org-a", "org-b", "pt-org-a", EMAIL, "secret plans", hub.keys["org-a"]):
                assert secret not in r.text, (service, path, secret)


# -- helpers ------------------------------------------------------------------------------------------------


async def _until(call: Any, ok: Any, timeout: float = 30.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        r = await call()
        if ok(r):
            return r
        if loop.time() > deadline:
            raise AssertionError(f"condition never held; last answer {r.status_code} {r.text}")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def _serve(app: Any) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
