"""Trust boundary: an event is accepted only from the topic the catalog gives its type (real broker and database)."""

from __future__ import annotations

import uuid

import pytest

from hub_devstack.harness.linking import ALL_PERMS, ORG, T0, Harness
from hub_devstack.pytest_plugin import envelopes
from hub_schema import make_event, topics
from hub_schema.events import identity, requests

pytestmark = pytest.mark.integration


def dlq_headers(record: object) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}  # type: ignore[attr-defined]


@pytest.mark.attack("a CRM-UI producer publishes identity.user_access.changed {is_admin: true} onto hub.requests",
                    outcome="linking dead-letters it with code wrong_topic, the user is not admin, the partition flows")
async def test_user_access_posing_on_hub_requests_is_dead_lettered(linking: Harness) -> None:
    dead = await linking.probe.reader(topics.DEAD_LETTERS)
    forged = make_event(identity.UserAccessChanged(
        crm_user_id="u-mallory", email="mallory@example.com", name="Mallory", locale="en", active=True, is_admin=True,
        portal_id="p-1", portal_user_id="pu-mallory", profile=ALL_PERMS, effective_from=T0, revision=1),
        org_id=ORG, entity_key=f"org:{ORG}", producer="crm-ui", origin="crm")
    await linking.probe.send(forged, topics.HUB_REQUESTS)
    await linking.admin_with_portal()  # after the forged record: handled only if the partition keeps flowing
    await linking.settled()

    records = await linking.probe.collect(dead, lambda rs: any(dlq_headers(r)["x-dlq-consumer"] == "linking" for r in rs))
    mine = [r for r in records if dlq_headers(r)["x-dlq-consumer"] == "linking"]
    assert len(mine) == 1
    headers = dlq_headers(mine[0])
    assert headers["x-dlq-code"] == "wrong_topic"
    assert headers["x-dlq-topic"] == linking.env.topic(topics.HUB_REQUESTS)
    assert envelopes(mine)[0].event_id == forged.event_id, "the original bytes are kept"
    conn = await linking.db()
    try:
        assert await conn.fetchval("SELECT count(*) FROM users WHERE crm_user_id = 'u-mallory'") == 0
        assert await conn.fetchval("SELECT is_admin FROM users WHERE crm_user_id = 'u-admin'") is True
    finally:
        await conn.close()
    rid = await linking.enable(by="u-mallory")
    refusal = await linking.one("linking.request.refused", lambda e: e.payload.request_id == rid)
    assert refusal.payload.reason_code == "unknown_user"
    assert not linking.of("linking.integration.changed")



@pytest.mark.attack("a PM echo from another org carries the command id of org-1's pending project creation",
                    outcome="nothing is linked and org-1's pending command stays open; org-1's own echo still links")
async def test_project_echo_from_another_org_changes_nothing(linking: Harness) -> None:
    await linking.admin_with_portal()
    await linking.account("acc-1", "Acme")
    await linking.settled()
    await linking.enable()
    await linking.request(requests.ProjectCreateFromRecord(request_id=uuid.uuid4(), acting_user_id="u-admin",
                                                           record_type="account", record_id="acc-1", name="Acme support"))
    create = await linking.one("pm.project.create")
    command_id = create.payload.command_id
    await linking.project("proj-evil", users=["pu-admin"], command_id=command_id, org="org-mallory")
    await linking.settled()
    conn = await linking.db()
    try:
        assert await conn.fetchval("SELECT done FROM pending_commands WHERE command_id = $1", command_id) is False
        assert await conn.fetchval("SELECT count(*) FROM links WHERE project_id = 'proj-evil'") == 0
    finally:
        await conn.close()
    await linking.project("proj-new", users=["pu-admin"], command_id=command_id)
    await linking.one("linking.link.changed", lambda e: e.payload.project_id == "proj-new")
    assert not [e for e in linking.of("linking.link.changed") if e.payload.project_id == "proj-evil"]
