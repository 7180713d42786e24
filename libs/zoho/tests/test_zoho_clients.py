"""The Zoho clients against the fake Zoho over real HTTP: token refresh, throttling, partial success."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from hub_fakezoho.app import FakeZoho, serving
from hub_zoho.api import ZohoApi, ZohoError
from hub_zoho.auth import AuthError
from hub_zoho.crm import CrmClient
from hub_zoho.orgs import ZohoOrg, load_orgs


def org_for(fake: FakeZoho, url: str, **over: object) -> ZohoOrg:
    return ZohoOrg.model_validate({"org_id": "org-1", "client_id": fake.client_id, "client_secret": fake.client_secret,
                                   "refresh_token": fake.refresh_token, "accounts_url": url, "api_url": url, "projects_url": url,
                                   "concurrency": 5, **over})


@pytest.fixture
async def zoho() -> AsyncIterator[tuple[FakeZoho, ZohoApi]]:
    fake = FakeZoho()
    async with serving(fake) as url:
        api = ZohoApi(org_for(fake, url))
        try:
            yield fake, api
        finally:
            await api.aclose()


async def test_expired_access_token_is_refreshed_once_under_concurrency(zoho: tuple[FakeZoho, ZohoApi]) -> None:
    fake, api = zoho
    crm = CrmClient(api)
    created = await crm.insert("Accounts", [{"Account_Name": "Acme"}])
    assert api.tokens.refreshes == 1
    fake.expire_tokens()  # the hour is over
    got = await asyncio.gather(*(crm.get_records("Accounts", [created[0].id]) for _ in range(20)))  # type: ignore[list-item]
    assert all(g[0]["Account_Name"] == "Acme" for g in got)
    assert api.tokens.refreshes == 2, "twenty callers finding the token expired must share one refresh"
    assert len(fake.issued) == 2


async def test_429_storm_backs_off_and_loses_nothing(zoho: tuple[FakeZoho, ZohoApi]) -> None:
    fake, api = zoho
    fake.limits.requests_per_window, fake.limits.window_seconds, fake.limits.retry_after = 3, 0.5, 0.1
    crm = CrmClient(api)
    results = await asyncio.gather(*(crm.insert("Tasks", [{"Subject": f"task {i}"}]) for i in range(30)))
    assert fake.throttled > 0 and api.throttled > 0, "the storm must actually have happened"
    assert all(r[0].ok for r in results)
    assert sorted(t["Subject"] for t in fake.crm["Tasks"].values()) == sorted(f"task {i}" for i in range(30))


async def test_partial_207_reports_each_record(zoho: tuple[FakeZoho, ZohoApi]) -> None:
    fake, api = zoho
    crm = CrmClient(api)
    results = await crm.insert("Tasks", [{"Subject": "one"}, {"Description": "no subject"}, {"Subject": "three"}])
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].code == "MANDATORY_NOT_FOUND" and results[1].details == {"api_name": "Subject"}
    assert ("POST", "/crm/v7/Tasks", 207) in fake.calls
    assert sorted(t["Subject"] for t in fake.crm["Tasks"].values()) == ["one", "three"]


async def test_writes_are_split_into_calls_of_at_most_100_records(zoho: tuple[FakeZoho, ZohoApi]) -> None:
    fake, api = zoho
    results = await CrmClient(api).insert("Accounts", [{"Account_Name": f"a{i}"} for i in range(250)])
    assert len(results) == 250 and all(r.ok for r in results)
    assert [c for c in fake.calls if c[0] == "POST"] == [("POST", "/crm/v7/Accounts", 201)] * 3


async def test_a_refused_call_raises_with_zoho_code(zoho: tuple[FakeZoho, ZohoApi]) -> None:
    _, api = zoho
    with pytest.raises(ZohoError) as err:
        await CrmClient(api).get_records("Nonsense", ["1"])
    assert err.value.code == "INVALID_MODULE"


async def test_a_wrong_refresh_token_is_an_auth_error_without_the_secret() -> None:
    fake = FakeZoho()
    async with serving(fake) as url:
        api = ZohoApi(org_for(fake, url, refresh_token="1000.not-the-right-one"))
        with pytest.raises(AuthError) as err:
            await CrmClient(api).get_records("Accounts", ["1"])
        await api.aclose()
    assert "not-the-right-one" not in str(err.value) and fake.client_secret not in str(err.value)


def test_orgs_load_from_a_secrets_file_and_never_print_secrets(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "zoho.json"
    path.write_text('{"org-1": {"data_centre": "eu", "client_id": "c", "client_secret": "s3cr3t", "refresh_token": "r3fr3sh"}}')
    orgs = load_orgs(path, env_value="")
    org = orgs["org-1"]
    assert org.accounts_base == "https://accounts.zoho.eu" and org.crm_base == "https://www.zohoapis.eu"
    assert "s3cr3t" not in repr(org) and "r3fr3sh" not in repr(org)


def test_event_id_is_the_same_for_the_same_state_and_differs_per_version() -> None:
    from hub_zoho.state import content_hash, event_id

    assert event_id("o", "Tasks", "1", 1) == event_id("o", "Tasks", "1", 1)
    assert event_id("o", "Tasks", "1", 1) != event_id("o", "Tasks", "1", 2)
    assert event_id("o", "Tasks", "1", 1) != event_id("p", "Tasks", "1", 1)
    assert content_hash({"a": 1, "b": 2}) == content_hash({"b": 2, "a": 1})


async def test_projects_partial_207_reports_each_task(zoho: tuple[FakeZoho, ZohoApi]) -> None:
    from hub_zoho.projects import ProjectsClient

    fake, api = zoho
    project = fake.ui_pm("projects", {"portal_id": "p1", "name": "Rollout"})
    task = fake.ui_pm("tasks", {"portal_id": "p1", "project_id": project["id"], "name": "One", "priority": "low"})
    results = await ProjectsClient(api).update_tasks("p1", project["id"], [{"id": task["id"], "priority": "high"},
                                                                          {"id": "404", "priority": "high"}])
    assert [(r.ok, r.code) for r in results] == [(True, "SUCCESS"), (False, "NOT_FOUND")]
    assert ("PATCH", f"/api/v3/portal/p1/projects/{project['id']}/tasks", 207) in fake.calls
    assert fake.pm["tasks"][task["id"]]["priority"] == "high"


async def test_daily_credits_wait_for_the_next_day_instead_of_failing() -> None:
    from datetime import UTC, datetime

    from hub_zoho.api import DailyCredits

    now = [datetime(2026, 11, 30, 23, 59, 59, 950_000, tzinfo=UTC).timestamp()]
    credits = DailyCredits(2, clock=lambda: now[0])
    await credits.spend()
    await credits.spend()
    third = asyncio.create_task(credits.spend())
    await asyncio.sleep(0.01)
    assert not third.done(), "the day's credits are spent: the call waits"
    now[0] += 1.0  # midnight passed
    await asyncio.wait_for(third, 5)
    assert credits.used == 1
