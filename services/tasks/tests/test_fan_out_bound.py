"""The bound on a PM task's fan-out (issue 17), through the real broker and database.

A flagged PM task is mirrored to one CRM task per record linked to its project (S5). With no bound, one
project linked to hundreds of deals turned one PM task into hundreds of commands and each edit into as many
again. Here HUB_TASKS__MAX_MIRRORED_RECORDS is 3: a task on a project with 3 linked records is mirrored to
each; with a 4th the task is refused as a whole (a decision, one e-mail to its owner, nothing sent), a later
edit is recorded but not e-mailed again, and once a record is unlinked the next edit mirrors it.
"""

from __future__ import annotations

import uuid

import pytest
from hub_devstack.harness.tasks import World

from hub_schema.events import linking

pytestmark = pytest.mark.integration


@pytest.fixture
def tasks_settings() -> dict[str, str]:
    return {"HUB_TASKS__MAX_MIRRORED_RECORDS": "3"}


TITLES = {"pt-a": "Within the bound", "pt-b": "Past the bound", "pt-c": "Flagged while disabled"}


def creates_of(world: World, pm_task_id: str) -> list[tuple[str, str]]:
    """The records a PM task's CRM tasks were created on (a create carries the task's title, by which it is told)."""
    return sorted((c.record_type, c.record_id) for c in world.payloads("crm.task.create")
                  if c.subject.startswith(TITLES[pm_task_id]))


async def test_S5_a_pm_task_on_a_project_with_more_linked_records_than_the_bound_is_refused_and_its_owner_told(
        world: World) -> None:
    await world.standard_setup()  # proj-1 ↔ deal-1, u-1 is portal user pu-1
    await world.link("proj-1", "account", "acc-1")
    await world.link("proj-1", "contact", "con-1")
    await world.settled()
    await world.pm_task("pt-a", 1, title="Within the bound")
    await world.wait_count("crm.task.create", 3)
    assert creates_of(world, "pt-a") == [("account", "acc-1"), ("contact", "con-1"), ("deal", "deal-1")]

    await world.link("proj-1", "deal", "deal-2")
    await world.settled()
    await world.pm_task("pt-b", 2, title="Past the bound")
    await world.pm_task("pt-a", 3, title="Within the bound, edited")
    evs = await world.quiet()
    assert creates_of(world, "pt-b") == [], "refused as a whole: no record gets a partial copy"
    assert len(world.payloads("crm.task.update")) == 0, "pt-a's CRM tasks are not created yet in the CRM (no echo)"
    refused = await world.decisions(pm_task_id="pt-b")
    assert [(d["decision"], d["reason_code"]) for d in refused] == [("refused", "too_many_linked_records")]
    assert "linked to 4 contacts, accounts and deals" in refused[0]["reason"]
    mails = [e.payload for e in world.of("notification.requested", evs)]
    assert len(mails) == 1
    assert mails[0].kind == "task_create_refused" and mails[0].recipient.user_id == "u-1"
    assert mails[0].data["reason_code"] == "too_many_linked_records"
    assert mails[0].data["reason_params"] == {"project_name": "Project proj-1", "record_count": 4, "limit": 3}
    assert mails[0].data["task_name"] == "Past the bound"

    await world.pm_task("pt-b", 4, title="Past the bound, edited")
    evs = await world.quiet()
    assert [d["reason_code"] for d in await world.decisions(pm_task_id="pt-b")] == ["too_many_linked_records"] * 2
    assert len(world.of("notification.requested", evs)) == 1, "told once, not at every edit"

    await world.link("proj-1", "deal", "deal-2", linked=False)
    await world.settled()
    await world.pm_task("pt-b", 5, title="Past the bound, now within")
    await world.wait_count("crm.task.create", 6)
    assert creates_of(world, "pt-b") == [("account", "acc-1"), ("contact", "con-1"), ("deal", "deal-1")]


async def test_S7_a_resync_does_not_mirror_a_task_past_the_bound_either(world: World) -> None:
    await world.standard_setup()
    for i in range(3):
        await world.link("proj-1", "deal", f"deal-x{i}")
    await world.enable(False)
    await world.settled()  # topics are ordered each on its own: the links and the switch first, then the task
    await world.pm_task("pt-c", 1, title="Flagged while disabled")
    await world.settled()
    await world.enable(True)
    await world.settled()
    await world.send(linking.ResyncRequested(request_id=uuid.uuid4(), portal_id="portal-1", requested_by="u-admin"),
                     key="org-1:resync")
    await world.quiet()
    assert creates_of(world, "pt-c") == []
    codes = [d["reason_code"] for d in await world.decisions(pm_task_id="pt-c")]
    assert codes == ["integration_disabled", "too_many_linked_records"], codes
