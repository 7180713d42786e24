"""The per-task command budget (issue 14, defence in depth), through the real broker and database.

A loop no rule foresees: an upstream that rewrites every value the hub sends (here the CRM appends "!" to
the title), so each echo is a new value and goes back to the other side. The budget (3 commands per window
here, HUB_TASKS__COMMAND_BUDGET) parks the task: `parked` in its history, the metric, nothing more sent;
the next real edit resumes it.
"""

from __future__ import annotations

from typing import Any

import pytest
from hub_devstack.harness.tasks import World

from hub_platform import metrics

pytestmark = pytest.mark.integration


@pytest.fixture
def tasks_settings() -> dict[str, str]:
    return {"HUB_TASKS__COMMAND_BUDGET": "3"}


def parked_total() -> float:
    return metrics.REGISTRY.get_sample_value("hub_tasks_parked_total") or 0.0


UPDATES = ("crm.task.update", "pm.task.update")


def updates(events: list[Any]) -> list[Any]:
    return [e for e in events if e.event_type in UPDATES]


async def apply_rewriting(w: World, command: Any, minutes: float) -> None:
    """The upstream applies the hub's update but rewrites the title (CRM appends "!", the PM tool "?")."""
    if command.event_type == "crm.task.update":
        echo = await w.apply_crm(command, minutes)
        task: Any = echo.model_copy(update={"subject": echo.subject + "!", "version": echo.version + 1})
        w.crm[task.id] = task
        await w.send(task, origin="crm", key=f"task:{task.id}")
    else:
        echo = await w.apply_pm(command, minutes)
        task = echo.model_copy(update={"title": echo.title + "?", "version": echo.version + 1})
        w.pm[task.id] = task
        await w.send(task, origin="pm", key=f"task:{task.id}")


async def test_a_task_over_its_command_budget_is_parked_until_a_real_edit(world: World) -> None:
    await world.standard_setup()
    await world.pm_task("pt-a", 1, title="Install")
    create = (await world.wait_count("crm.task.create"))[-1]
    await world.apply_crm(create, 2)
    hub_task_id = create.payload.hub_task_id
    await world.collect()
    before = parked_total()

    await world.pm_task("pt-a", 3, title="T")
    for minute in range(4, 14):
        await world.settled()
        if "parked" in [d["decision"] for d in await world.decisions(hub_task_id=hub_task_id)]:
            break
        seen = len(updates(world.out))
        await world.collect(lambda evs, seen=seen: len(updates(evs)) > seen)
        await apply_rewriting(world, updates(world.out)[-1], minute)
    decisions = await world.decisions(hub_task_id=hub_task_id)
    assert [d["decision"] for d in decisions].count("parked") == 1, [(d["decision"], d["reason_code"]) for d in decisions]
    assert parked_total() == before + 1
    sent = "SELECT count(*) AS n FROM tasks.task_commands WHERE hub_task_id = $1 AND kind LIKE '%update'"
    assert (await world.query(sent, hub_task_id))[0]["n"] == 3, "the budget: 3 update commands, then nothing"
    [m] = await world.query("SELECT parked_at, parked_reason FROM tasks.task_mappings WHERE hub_task_id = $1", hub_task_id)
    assert m["parked_at"] is not None and "budget" in m["parked_reason"]

    await world.pm_task("pt-a", 30, priority="low")  # a person's edit resumes the task
    await world.settled()
    decisions = await world.decisions(hub_task_id=hub_task_id)
    assert ("resumed", "real_edit") in [(d["decision"], d["reason_code"]) for d in decisions]
    assert (await world.query(sent, hub_task_id))[0]["n"] == 4
    [m] = await world.query("SELECT parked_at FROM tasks.task_mappings WHERE hub_task_id = $1", hub_task_id)
    assert m["parked_at"] is None
