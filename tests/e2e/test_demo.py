"""`make demo` cannot silently rot: its story (hub_sandbox.demo.run_story) runs here against the in-process hub_stack.

The story itself waits on observable state and raises DemoFailed when a step does not
happen; this test also checks the facts it reports, so a step that "passes" without
the hub doing its part fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_devstack.e2e import LINKING_ADMIN_TOKEN, hub_stack
from hub_devstack.pytest_plugin import HubEnv
from hub_sandbox.demo import Target, run_story

pytestmark = pytest.mark.e2e


async def test_S1_S24_demo_story_runs_against_the_whole_hub(hub_env: HubEnv, tmp_path: Path) -> None:
    async with hub_stack(hub_env, tmp_path) as stack:
        target = Target(sandbox_url=stack.url("sandbox"), linking_url=stack.url("linking"), maildir=stack.maildir,
                        kafka_bootstrap=hub_env.bootstrap, topic_prefix=hub_env.topic_prefix,
                        kafka_options=hub_env.client_options("ui"),
                        admin_token=LINKING_ADMIN_TOKEN, timeout=120.0)
        lines: list[str] = []
        outcome = await run_story(target, "demo-test", out=lines.append)
    f = outcome.facts
    print("\n".join(lines))
    assert f["free_refusal"] == "plan_required"
    assert any(name.endswith(".xlsx") for name in f["report_attachments"])
    assert f["rollout"] in f["acme_projects_after_matching"]
    assert ("account", f["initech"]) in f["rollout_records"] and ("account", f["acme"]) in f["rollout_records"]
    assert f["deal_project"]
    assert f["recurring_in_crm"] == []
    assert (f["s10_crm_status"], f["s10_pm_status"]) == ("closed", "closed")
    assert (f["s11_crm_due"], f["s11_pm_due"]) == ("2027-03-01", "2027-03-01")
    assert f["reenabled_pm_title"] == "Kick-off meeting (on site)"  # re-enabling did not resync (S7)
    assert f["reports_before_after_reenable"][0] == f["reports_before_after_reenable"][1]  # no new matching
    assert f["switched_projects"] and all(p != f["rollout"] for p in f["switched_projects"])
    assert (f["old_key_status"], f["new_key_status"]) == (401, 200)
    assert len(outcome.mails) == 4 and all(p.exists() for p in outcome.mails)
