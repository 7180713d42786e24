"""Issue 14 through the real broker and database: a refusal answered by a refusal ends in one `conflict`.

The harness plays both upstreams and answers the hub's commands with rejections: the change refused by
one side, the revert (or the correction of an S10/S11 refusal) refused by the other. The hub must record
one `conflict`, send at most one e-mail, send nothing more for the change, and carry the next real edit.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import pytest
from hub_devstack.harness.tasks import World

from hub_schema.events.crm import CrmCommandRejected
from hub_schema.events.pm import PmCommandRejected

pytestmark = pytest.mark.integration


async def mirrored_pair(w: World, *, schedule_fixed: bool = False, **pm_fields: Any) -> tuple[uuid.UUID, str]:
    """Setup, a flagged PM task pt-a mirrored to deal-1 and the CRM's echo applied: (hub_task_id, CRM task id)."""
    await w.standard_setup(schedule_fixed=schedule_fixed)
    await w.pm_task("pt-a", 1, title="Install", **pm_fields)
    create = (await w.wait_count("crm.task.create"))[-1]
    echo = await w.apply_crm(create, 2)
    await w.collect()
    return create.payload.hub_task_id, echo.id


async def reject(w: World, side: str, command: Any, code: str = "locked") -> None:
    """The upstream `side` refuses the hub's command (what the sandbox does for a locked record)."""
    model = PmCommandRejected if side == "pm" else CrmCommandRejected
    task_id = command.payload.task_id
    await w.send(model(command_id=command.payload.command_id, command_type=command.event_type, reason_code=code,
                       reason=f"task {task_id} is locked"), origin=side, key=f"task:{task_id}")


async def commands_of(w: World, hub_task_id: uuid.UUID) -> list[dict[str, Any]]:
    await w.settled()
    return await w.query("SELECT target, kind, cause, reverts_command_id, outcome FROM tasks.task_commands "
                         "WHERE hub_task_id = $1 ORDER BY sent_at, kind", hub_task_id)


async def conflicts(w: World, hub_task_id: uuid.UUID) -> list[dict[str, Any]]:
    await w.settled()
    return [d for d in await w.decisions(hub_task_id=hub_task_id) if d["decision"] == "conflict"]


async def test_crm_change_refused_by_pm_then_revert_refused_by_crm_ends_in_one_conflict(world: World, service: Any) -> None:
    import httpx

    hub_task_id, ct = await mirrored_pair(world)
    await world.crm_task(ct, 3, subject="Install v2", acting="u-1")
    change = (await world.wait_count("pm.task.update"))[-1]
    await reject(world, "pm", change)
    revert = (await world.wait_count("crm.task.update"))[-1]
    assert {c.field: c.value for c in revert.payload.changes} == {"title": "Install"}
    await reject(world, "crm", revert)
    [conflict] = await conflicts(world, hub_task_id)
    assert conflict["fields"] == ["title"] and conflict["side"] == "crm" and conflict["reason_code"] == "locked"
    cmds = await commands_of(world, hub_task_id)
    assert [(c["kind"], c["cause"]) for c in cmds] == [
        ("crm.task.create", "change"), ("pm.task.update", "change"), ("crm.task.update", "revert")]
    assert cmds[2]["reverts_command_id"] == change.payload.command_id
    await world.collect(settle=1.0)
    assert len(world.of("notification.requested")) == 1, "one e-mail: the refusal of the change"
    assert world.of("notification.requested")[0].payload.recipient.user_id == "u-1"
    assert len(world.of("pm.task.update")) == 1 and len(world.of("crm.task.update")) == 1, "nothing more sent"

    # readable over the history API, with the org's service key
    key = await world.service_key()
    await world.settled()
    app = service.http_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tasks",
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        body = (await client.get(f"/api/v1/tasks/{hub_task_id}/history")).json()
    assert [d["decision"] for d in body["decisions"]][-1] == "conflict"

    # the next real edit (of another field, on the side holding the agreed title) goes through as usual and
    # heals the pair: the CRM still shows the title the PM side refused, so the agreed one goes along
    await world.pm_task("pt-a", 10, title="Install", priority="high")
    nxt = (await world.wait_count("crm.task.update", 2))[-1]
    assert {c.field: c.value for c in nxt.payload.changes} == {"priority": "high", "title": "Install"}
    healed = [d for d in await world.decisions(hub_task_id=hub_task_id) if d["reason_code"] == "healed"]
    assert [d["fields"] for d in healed] == [["title"]]
    await world.apply_crm(nxt, 11)
    await world.pm_task("pt-a", 12, title="Install", priority="low")
    last = (await world.wait_count("crm.task.update", 3))[-1]
    assert {c.field: c.value for c in last.payload.changes} == {"priority": "low"}, "healed once, not again"


async def test_pm_change_refused_by_crm_then_revert_refused_by_pm_ends_in_one_conflict(world: World) -> None:
    hub_task_id, ct = await mirrored_pair(world)
    await world.pm_task("pt-a", 3, due_date=date(2024, 6, 1))
    change = (await world.wait_count("crm.task.update"))[-1]
    await reject(world, "crm", change)
    revert = (await world.wait_count("pm.task.update"))[-1]
    assert {c.field: c.value for c in revert.payload.changes} == {"due_date": None}
    await reject(world, "pm", revert)
    [conflict] = await conflicts(world, hub_task_id)
    assert conflict["fields"] == ["due_date"] and conflict["side"] == "pm"
    assert [c["cause"] for c in await commands_of(world, hub_task_id)] == ["change", "change", "revert"]
    await world.collect(settle=1.0)
    assert not world.of("notification.requested"), "a PM user's change: nobody in the CRM to e-mail"
    assert len(world.of("pm.task.update")) == 1 and len(world.of("crm.task.update")) == 1

    await world.crm_task(ct, 10, priority="high", acting="u-1")  # a real edit on the other side
    nxt = (await world.wait_count("pm.task.update", 2))[-1]
    assert {c.field: c.value for c in nxt.payload.changes} == {"priority": "high", "due_date": None}, \
        "the edit, and the agreed due date the PM side still lacks (the conflict is healed by the next real edit)"


async def test_S11_due_date_refused_by_the_hub_then_correction_refused_by_crm_ends_in_one_conflict(world: World) -> None:
    hub_task_id, ct = await mirrored_pair(world, schedule_fixed=True, due_date=date(2024, 5, 1))
    await world.crm_task(ct, 3, due_date=date(2024, 7, 1), acting="u-1")
    correction = (await world.wait_count("crm.task.update"))[-1]
    assert {c.field: c.value for c in correction.payload.changes} == {"due_date": date(2024, 5, 1)}
    await reject(world, "crm", correction)
    [conflict] = await conflicts(world, hub_task_id)
    assert conflict["fields"] == ["due_date"] and conflict["side"] == "crm"
    assert [c["cause"] for c in await commands_of(world, hub_task_id)] == ["change", "correction"]
    await world.collect(settle=1.0)
    [mail] = world.of("notification.requested")
    assert mail.payload.kind == "due_date_change_failed"
    assert not world.of("pm.task.update") and len(world.of("crm.task.update")) == 1


async def test_S10_subtask_reopen_refused_by_pm_then_revert_refused_by_crm_ends_in_one_conflict(world: World) -> None:
    hub_task_id, ct = await mirrored_pair(world)
    await world.pm_task("pt-a", 3, status="closed")
    await world.apply_crm((await world.wait_count("crm.task.update"))[-1], 4)
    await world.crm_task(ct, 5, status="open", acting="u-1")  # the hub does not know the parent: it asks the PM tool
    change = (await world.wait_count("pm.task.update"))[-1]
    await reject(world, "pm", change, "parent_task_closed")
    revert = (await world.wait_count("crm.task.update", 2))[-1]
    assert {c.field: c.value for c in revert.payload.changes} == {"status": "closed"}
    await reject(world, "crm", revert)
    [conflict] = await conflicts(world, hub_task_id)
    assert conflict["fields"] == ["status"]
    await world.collect(settle=1.0)
    assert [m.payload.kind for m in world.of("notification.requested")] == ["subtask_update_failed"]
    assert len(world.of("pm.task.update")) == 1 and len(world.of("crm.task.update")) == 2
