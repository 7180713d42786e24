"""Task mirroring through the real broker and database (S5, S7, S10, S11, S12, loop prevention, conflicts, history)."""

from __future__ import annotations

import pytest
from datetime import datetime

from hub_devstack.harness.tasks import ORG, World, at

pytestmark = pytest.mark.integration


async def mirrored_pair(w: World, task_id: str = "pt-a") -> tuple[object, str]:
    """A flagged PM task mirrored to deal-1 and the CRM's echo applied; returns (create command, crm task id)."""
    await w.pm_task(task_id, 1, title="Install", add_to_crm=True)
    create = (await w.wait_count("crm.task.create"))[-1]
    echo = await w.apply_crm(create, 2)
    await w.collect()
    return create, echo.id


async def test_S5_flagged_pm_task_is_mirrored_to_every_linked_record(world: World) -> None:
    await world.standard_setup()
    await world.link("proj-1", "contact", "con-1")
    await world.link("proj-1", "lead", "lead-1")  # leads are not used for tasks
    await world.settled()
    await world.pm_task("pt-a", 1, title="Install", due_date=None, owner_id="pu-1")
    creates = await world.wait_count("crm.task.create", 2)
    assert sorted((c.payload.record_type, c.payload.record_id) for c in creates) == [("contact", "con-1"), ("deal", "deal-1")]
    assert {c.payload.subject for c in creates} == {"Install"}
    assert {c.payload.owner_id for c in creates} == {"u-1"}, "the PM owner pu-1 is the CRM user u-1"
    assert len({c.payload.hub_task_id for c in creates}) == 2
    for c in creates:
        await world.apply_crm(c, 2)
    await world.collect(settle=1.5)
    assert len(world.of("crm.task.create")) == 2 and not world.of("crm.task.update") and not world.of("pm.task.update")
    rows = await world.query("SELECT crm_task_id FROM tasks.task_mappings WHERE pm_task_id = 'pt-a' ORDER BY record_type")
    assert all(r["crm_task_id"] for r in rows) and len(rows) == 2


async def test_S5_unflagged_and_recurring_pm_tasks_are_never_mirrored(world: World) -> None:
    await world.standard_setup()
    await world.pm_task("pt-plain", 1, add_to_crm=False)
    await world.pm_task("pt-rec", 1, add_to_crm=True, recurring=True)
    await world.pm_task("pt-rec", 2, title="still recurring")
    await world.collect(lambda evs: len([e for e in evs if e.event_type == "tasks.mirror.decided"]) >= 3)
    assert not world.of("crm.task.create")
    codes = {(d["pm_task_id"], d["reason_code"]) for d in await world.query("SELECT * FROM tasks.task_decisions")}
    assert ("pt-plain", "not_flagged") in codes and ("pt-rec", "recurring") in codes


async def test_S5_field_changes_flow_both_ways_and_echoes_are_not_mirrored_back(world: World) -> None:
    await world.standard_setup()
    _, ct = await mirrored_pair(world)
    # PM -> CRM
    await world.pm_task("pt-a", 3, title="Install v2", status="closed")
    upd = (await world.wait_count("crm.task.update"))[-1]
    assert {c.field: c.value for c in upd.payload.changes} == {"title": "Install v2", "status": "closed"}
    assert upd.payload.task_id == ct and upd.payload.base_version == 1
    await world.apply_crm(upd, 4)  # the echo (command_id set)
    # CRM -> PM
    await world.crm_task(ct, 5, priority="high", owner_id="u-2", acting="u-1")
    pm_upd = (await world.wait_count("pm.task.update"))[-1]
    assert {c.field: c.value for c in pm_upd.payload.changes} == {"priority": "high", "owner_id": "pu-2"}
    assert pm_upd.payload.task_id == "pt-a" and pm_upd.payload.base_version == 2  # the PM update at minute 3
    await world.apply_pm(pm_upd, 6)
    await world.collect(settle=2.0)
    assert len(world.of("crm.task.update")) == 1, "the CRM echo was not mirrored back"
    assert len(world.of("pm.task.update")) == 1, "the PM echo was not mirrored back"
    assert world.crm[ct].priority == world.pm["pt-a"].priority == "high"
    assert world.crm[ct].subject == world.pm["pt-a"].title == "Install v2"
    echoes = [d for d in await world.query("SELECT * FROM tasks.task_decisions WHERE reason_code = 'echo'")]
    assert len(echoes) >= 3  # the create echo and both update echoes


async def test_loop_echo_fed_back_twice_sends_no_second_command(world: World) -> None:
    await world.standard_setup()
    create, ct = await mirrored_pair(world)
    await world.pm_task("pt-a", 3, description="details")
    upd = (await world.wait_count("crm.task.update"))[-1]
    echo = await world.apply_crm(upd, 4)
    # the same echo content delivered again under a new event (a connector replay), and a newer no-op version
    await world.send(echo.model_copy(update={"version": echo.version + 1}), origin="crm", key=f"task:{ct}")
    await world.collect(settle=2.0)
    commands = [e for e in world.out if e.event_type in ("crm.task.create", "crm.task.update", "pm.task.update",
                                                          "pm.task.create")]
    assert [e.event_type for e in commands] == ["crm.task.create", "crm.task.update"]


async def test_stale_upstream_versions_are_dropped(world: World) -> None:
    await world.standard_setup()
    _, ct = await mirrored_pair(world)
    old = await world.pm_task("pt-a", 3, title="new")
    await world.wait_count("crm.task.update")
    stale = old.model_copy(update={"version": old.version - 1, "title": "old"})
    await world.send(stale, origin="pm", key="task:pt-a")
    await world.collect(settle=1.5)
    assert len(world.of("crm.task.update")) == 1
    assert any(d["reason_code"] == "stale" for d in await world.decisions(pm_task_id="pt-a"))


async def test_S5_comment_on_mirrored_task_becomes_note(world: World) -> None:
    from hub_schema.events.pm import PmCommentAdded

    from hub_devstack.harness.tasks import at

    await world.standard_setup()
    await mirrored_pair(world)
    await world.send(PmCommentAdded(portal_id="portal-1", project_id="proj-1", task_id="pt-a", id="cm-1",
                                    body="Done on site", author_id="pu-1", author_name="Taro", modified_at=at(5),
                                    version=1), origin="pm", key="task:pt-a")
    await world.send(PmCommentAdded(portal_id="portal-1", project_id="proj-1", task_id="pt-unmirrored", id="cm-2",
                                    body="x", author_id="pu-1", author_name="Taro", modified_at=at(5), version=1),
                     origin="pm", key="task:pt-unmirrored")
    notes = await world.wait_count("crm.note.add")
    assert len(notes) == 1
    n = notes[0].payload
    assert (n.record_type, n.record_id, n.body, n.title, n.pm_comment_id) == ("deal", "deal-1", "Done on site", "Install", "cm-1")


async def test_S12_crm_task_on_linked_record_becomes_pm_task_when_permitted(world: World) -> None:
    await world.standard_setup()
    await world.crm_task("ct-x", 1, subject="Kick-off", owner_id="u-1", created_by="u-1")
    create = (await world.wait_count("pm.task.create"))[0].payload
    assert (create.project_id, create.title, create.owner_id) == ("proj-1", "Kick-off", "pu-1")
    echo = await world.apply_pm((await world.wait_count("pm.task.create"))[0], 2)
    await world.collect(settle=1.5)
    assert not world.of("crm.task.create") and not world.of("crm.task.update")
    row = (await world.query("SELECT * FROM tasks.task_mappings WHERE crm_task_id = 'ct-x'"))[0]
    assert row["pm_task_id"] == echo.id and row["origin"] == "crm"


async def test_S12_refused_without_add_task_permission(world: World) -> None:
    await world.standard_setup()
    await world.crm_task("ct-y", 1, created_by="u-2")
    refused = (await world.wait_count("tasks.request.refused"))[0].payload
    assert refused.reason_code == "permission_denied" and refused.acting_user_id == "u-2"
    assert refused.crm_task_id == "ct-y"
    notes = await world.wait_count("notification.requested")
    assert notes[0].payload.kind == "task_create_refused" and notes[0].payload.recipient.email == "u-2@example.com"
    assert not world.of("pm.task.create")


async def test_S12_refused_when_record_has_no_linked_project(world: World) -> None:
    await world.standard_setup()
    await world.crm_task("ct-z", 1, record_type="account", record_id="acc-none")
    refused = (await world.wait_count("tasks.request.refused"))[0].payload
    assert refused.reason_code == "no_linked_project" and "acc-none" in refused.reason
    assert refused.record.record_id == "acc-none"
    assert not world.of("pm.task.create")


async def test_S10_reopening_subtask_of_closed_parent_from_crm_is_refused(world: World) -> None:
    from hub_schema.events.crm import CrmDealUpserted

    await world.standard_setup()
    await world.send(CrmDealUpserted(id="deal-1", name="Big deal", account_id=None, stage="Won", won=False,
                                     url="https://crm.example/deals/deal-1", modified_at=at(0), version=1),
                     origin="crm", key="deal:deal-1")
    await world.pm_task("pt-parent", 0, add_to_crm=False, status="closed")
    await world.pm_task("pt-a", 1, title="Sub", parent_task_id="pt-parent", status="closed")
    create = (await world.wait_count("crm.task.create"))[-1]
    ct = (await world.apply_crm(create, 2)).id
    await world.collect()
    await world.crm_task(ct, 3, status="open", acting="u-1")
    refused = (await world.wait_count("tasks.request.refused"))[0].payload
    assert refused.reason_code == "parent_task_closed" and refused.fields == ["status"]
    note = (await world.wait_count("notification.requested"))[0].payload
    assert note.kind == "subtask_update_failed" and note.recipient.user_id == "u-1" and note.recipient.locale == "ja"
    # the mail names things (the parent task, the project, the record with its link) and carries the reason as a code
    assert {k: note.data.get(k) for k in ("task_name", "parent_task_name", "project_name", "record_name", "record_url")} == {
        "task_name": "Sub", "parent_task_name": "Task pt-parent", "project_name": "Project proj-1",
        "record_name": "Big deal", "record_url": "https://crm.example/deals/deal-1"}
    assert note.data["reason_code"] == "parent_task_closed" and note.recipient.time_zone == "Europe/Berlin"
    assert note.data["reason_params"]["parent_task_name"] == "Task pt-parent"
    assert datetime.fromisoformat(note.data["occurred_at"]).tzinfo is not None
    revert = (await world.wait_count("crm.task.update"))[-1].payload
    assert {c.field: c.value for c in revert.changes} == {"status": "closed"}, "the CRM is set back to closed"
    assert not world.of("pm.task.update")


async def test_S10_upstream_rejection_of_reopen_is_reported_the_same_way(world: World) -> None:
    from hub_schema.events.pm import PmCommandRejected

    await world.standard_setup()
    _, ct = await mirrored_pair(world)
    await world.pm_task("pt-a", 3, status="closed")
    await world.apply_crm((await world.wait_count("crm.task.update"))[-1], 4)
    await world.crm_task(ct, 5, status="open", acting="u-1")  # the hub does not know the parent: it asks the PM tool
    upd = (await world.wait_count("pm.task.update"))[-1].payload
    await world.send(PmCommandRejected(command_id=upd.command_id, command_type="pm.task.update",
                                       reason_code="parent_task_closed", reason="the parent task is closed"),
                     origin="pm", key="task:pt-a")
    refused = (await world.wait_count("tasks.request.refused"))[0].payload
    assert refused.reason_code == "parent_task_closed"
    note = (await world.wait_count("notification.requested"))[0].payload
    assert note.kind == "subtask_update_failed" and note.recipient.user_id == "u-1"
    revert = (await world.wait_count("crm.task.update", 2))[-1].payload
    assert {c.field: c.value for c in revert.changes} == {"status": "closed"}


async def test_S11_due_date_change_in_fixed_schedule_project_is_refused(world: World) -> None:
    from datetime import date

    await world.standard_setup(schedule_fixed=True)
    _, ct = await mirrored_pair(world)
    await world.crm_task(ct, 3, due_date=date(2024, 5, 1), priority="low", acting="u-1")
    refused = (await world.wait_count("tasks.request.refused"))[0].payload
    assert refused.reason_code == "schedule_fixed" and refused.fields == ["due_date"]
    note = (await world.wait_count("notification.requested"))[0].payload
    assert note.kind == "due_date_change_failed" and note.recipient.email == "u-1@example.com"
    pm_upd = (await world.wait_count("pm.task.update"))[-1].payload
    assert {c.field for c in pm_upd.changes} == {"priority"}, "the other fields still mirror"
    revert = (await world.wait_count("crm.task.update"))[-1].payload
    assert {c.field: c.value for c in revert.changes} == {"due_date": None}


async def test_S7_disabled_mirrors_nothing_reenable_backfills_nothing_resync_reconciles(world: World) -> None:
    from hub_schema.events.linking import ResyncRequested

    import uuid

    await world.standard_setup()
    _, ct = await mirrored_pair(world)
    await world.enable(False)
    await world.settled()
    await world.pm_task("pt-a", 10, title="changed while off")
    await world.crm_task(ct, 11, priority="high", acting="u-1")
    await world.pm_task("pt-new", 12, title="new while off")
    await world.crm_task("ct-new", 13, subject="crm new while off")
    await world.settled()
    await world.enable(True)
    await world.settled()
    await world.collect(settle=2.0)
    commands = [e for e in world.out if e.event_type.endswith((".create", ".update")) and e.event_type != "crm.task.create"]
    assert not commands and len(world.of("crm.task.create")) == 1, "nothing mirrored while disabled nor on re-enable"
    assert {d["reason_code"] for d in await world.decisions(pm_task_id="pt-new")} == {"integration_disabled"}
    await world.send(ResyncRequested(request_id=uuid.uuid4(), portal_id="portal-1", requested_by="u-admin"),
                     key=f"{ORG}:resync")
    to_crm = await world.wait_count("crm.task.update")
    to_pm = await world.wait_count("pm.task.update")
    creates = await world.wait_count("crm.task.create", 2)
    assert {c.field: c.value for c in to_crm[0].payload.changes} == {"title": "changed while off"}
    assert {c.field: c.value for c in to_pm[0].payload.changes} == {"priority": "high"}
    assert creates[-1].payload.subject == "new while off"
    await world.apply_crm(to_crm[0], 20)
    await world.apply_pm(to_pm[0], 21)
    await world.collect(settle=1.5)
    assert world.crm[ct].subject == world.pm["pt-a"].title and world.crm[ct].priority == world.pm["pt-a"].priority
    assert len(world.of("crm.task.update")) == 1 and len(world.of("pm.task.update")) == 1


@pytest.mark.parametrize("pm_first", [True, False])
async def test_conflict_concurrent_edits_newest_wins_and_both_sides_converge(world: World, pm_first: bool) -> None:
    await world.standard_setup()
    _, ct = await mirrored_pair(world)
    # both sides edit the title at once; the CRM edit is newer (minute 6 vs 5); the PM side also edits priority
    edits = [lambda: world.pm_task("pt-a", 5, title="from PM", priority="low"),
             lambda: world.crm_task(ct, 6, subject="from CRM", acting="u-1")]
    for edit in (edits if pm_first else edits[::-1]):
        await edit()
    await world.settled()
    # play the upstreams until nothing more is sent
    applied: set[object] = set()
    minute = 10
    for _ in range(6):
        await world.collect(settle=1.5)
        pending = [e for e in world.out if e.event_type in ("crm.task.update", "pm.task.update") and e.event_id not in applied]
        if not pending:
            break
        for e in pending:
            applied.add(e.event_id)
            minute += 1
            await (world.apply_crm(e, minute) if e.event_type == "crm.task.update" else world.apply_pm(e, minute))
    assert world.pm["pt-a"].title == world.crm[ct].subject == "from CRM"
    assert world.pm["pt-a"].priority == world.crm[ct].priority == "low"
    lost = [d for d in await world.query("SELECT * FROM tasks.task_decisions WHERE reason_code = 'conflict_lost'")]
    assert lost and all(d["fields"] == ["title"] for d in lost)


async def test_conflict_tie_goes_to_pm(world: World) -> None:
    await world.standard_setup()
    _, ct = await mirrored_pair(world)
    await world.crm_task(ct, 5, subject="from CRM", acting="u-1")
    await world.settled()
    await world.pm_task("pt-a", 5, title="from PM")
    await world.collect(lambda evs: any(e.event_type == "crm.task.update" for e in evs))
    to_crm = world.of("crm.task.update")[-1].payload
    assert {c.field: c.value for c in to_crm.changes} == {"title": "from PM"}


async def test_history_is_readable_over_http(world: World, service: object) -> None:
    import httpx

    await world.standard_setup()
    create, ct = await mirrored_pair(world)
    await world.pm_task("pt-plain", 1, add_to_crm=False)
    await world.settled()
    key = await world.service_key()
    await world.settled()
    app = service.http_app()  # type: ignore[attr-defined]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://tasks",
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        r = await client.get(f"/api/v1/tasks/{create.payload.hub_task_id}/history")
        assert r.status_code == 200
        body = r.json()
        assert body["pm_task_id"] == "pt-a" and body["crm_task_id"] == ct
        assert [(d["decision"], d["reason_code"]) for d in body["decisions"]] == [("mirrored", "created"), ("skipped", "echo")]
        r = await client.get("/api/v1/history", params={"pm_task_id": "pt-plain"})
        assert [d["reason_code"] for d in r.json()["decisions"]] == ["not_flagged"]
        r = await client.get("/api/v1/history", params={"crm_task_id": ct})
        assert len(r.json()["decisions"]) == 2 and r.json()["next"] is None and r.json()["org_id"] == ORG
        first = (await client.get("/api/v1/history", params={"crm_task_id": ct, "limit": 1})).json()
        second = (await client.get("/api/v1/history", params={"crm_task_id": ct, "limit": 1, "after": first["next"]})).json()
        assert [d["id"] for d in first["decisions"] + second["decisions"]] == [d["id"] for d in r.json()["decisions"]]
        assert second["next"] is None
        assert (await client.get("/api/v1/history", params={})).status_code == 422
        assert (await client.get("/api/v1/history", params={"org_id": ORG, "pm_task_id": "pt-plain"})).status_code == 422
        assert (await client.get("/api/v1/tasks/not-a-uuid/history")).status_code == 422
