"""The fake Zoho keeps its records in tables of its own (SQLite): a file outlives a restart of the fake."""

from __future__ import annotations

from pathlib import Path

from hub_fakezoho.app import FakeZoho, seed_demo


def test_records_and_the_id_sequence_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "fakezoho.sqlite3")
    first = FakeZoho(db_path=path)
    seed_demo(first)
    acme = next(iter(first.crm["Accounts"].values()))
    first.crm_write("Accounts", [{"id": acme["id"], "Account_Name": "Acme Ltd"}], insert=False)
    first.ui_crm_delete("Accounts", first.ui_crm("Accounts", {"Account_Name": "Gone"})["id"])
    task = first.ui_pm("tasks", {"portal_id": "700001", "project_id": "p-1", "name": "Kick-off"})
    first.db.close()

    again = FakeZoho(db_path=path)
    assert [a["Account_Name"] for a in again.crm["Accounts"].values()] == ["Acme Ltd"], "the update was written back"
    assert [d["display_name"] for d in again.crm_deleted["Accounts"].values()] == ["Gone"]
    assert again.pm["tasks"][task["id"]]["name"] == "Kick-off"
    assert list(again.portals) == ["700001"]
    assert int(again.new_id()) > max(int(i) for i in [*again.crm["Accounts"], task["id"]]), "no id is handed out twice"


def test_each_fake_in_memory_has_its_own_tables() -> None:
    one, two = FakeZoho(), FakeZoho()
    one.ui_crm("Accounts", {"Account_Name": "Acme"})
    assert len(one.crm["Accounts"]) == 1 and len(two.crm["Accounts"]) == 0
    del one.crm["Accounts"][next(iter(one.crm["Accounts"]))]
    assert len(one.crm["Accounts"]) == 0
