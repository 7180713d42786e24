"""Trust boundary of identity: a pending command id is looked up within the echo's own org (real broker and DB)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the helpers of the identity integration tests (importlib mode)

from test_integration import ORG, PORTAL, V, db_value, enable, ev, start, wait_db  # noqa: E402

from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, running
from hub_schema import make_event
from hub_schema.events import crm, pm

pytestmark = pytest.mark.integration


@pytest.mark.attack("a PM refusal and a PM echo from another org carry org-1's pending client-company command id",
                    outcome="org-1's pending command and mapping are untouched; org-1's own echo still links")
async def test_pending_command_of_another_org_is_not_taken(hub_env: HubEnv, kafka_probe: KafkaProbe) -> None:
    service, out = await start(hub_env, kafka_probe)
    async with running(service):
        await enable(hub_env, kafka_probe)
        await kafka_probe.send(ev(crm.CrmAccountUpserted(id="acc-1", name="Acme", version=1, **V), "account:acc-1"))
        await out.wait(lambda o: bool(o.payloads("pm.client_company.create", crm_account_id="acc-1")))
        command_id = out.payloads("pm.client_company.create")[0].command_id
        forged = [
            make_event(pm.PmCommandRejected(command_id=command_id, command_type="pm.client_company.create",
                                            reason_code="invalid", reason="refused elsewhere"),
                       org_id="org-mallory", entity_key="client_company:x", producer="pm", origin="pm"),
            make_event(pm.PmClientCompanyUpserted(portal_id=PORTAL, id="cc-evil", name="Acme", version=1,
                                                  command_id=command_id, **V),
                       org_id="org-mallory", entity_key="client_company:cc-evil", producer="pm", origin="pm"),
        ]
        for env in forged:
            await kafka_probe.send(env)
        for env in forged:
            await wait_db(hub_env, "SELECT true FROM inbox WHERE event_id = $1", env.event_id)
        assert await db_value(hub_env, "SELECT count(*) FROM pending_commands WHERE command_id = $1", command_id) == 1
        assert await db_value(hub_env, "SELECT state FROM customer_mappings WHERE org_id = $1 AND crm_id = 'acc-1'",
                              ORG) == "pending"
        await kafka_probe.send(ev(pm.PmClientCompanyUpserted(portal_id=PORTAL, id="cc-1", name="Acme", version=1,
                                                             command_id=command_id, **V), "client_company:cc-1", "pm"))
        await out.wait(lambda o: any(m.state == "linked" for m in
                                     o.payloads("identity.customer_mapping.changed", crm_id="acc-1")))
        assert out.payloads("identity.customer_mapping.changed", crm_id="acc-1")[-1].pm_id == "cc-1"
