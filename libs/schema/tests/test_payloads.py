"""The payload contract: every event round-trips, anything off-contract is refused with a reason."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from hub_schema import InvalidEvent, Payload, all_events, encode, event, make_event, parse_event, topics
from hub_schema.envelope import MAX_MESSAGE_BYTES
from hub_schema.events import commands, crm, notifications, pm, requests
from hub_schema.events.common import Versioned
from hub_schema.registry import topic_of
from hub_schema.samples import SAMPLES, missing, sample

KEYS = sorted(all_events())


def _envelope(payload: Payload) -> Any:
    return make_event(payload, org_id="org-1", entity_key="test:1", producer="test", origin="crm")


def _raw(event_type: str, payload: dict[str, Any], version: int | None = None) -> bytes:
    """A message with a hand-made payload (what a misbehaving producer could send)."""
    env = json.loads(encode(_envelope(sample(event_type, version))))
    env["payload"] = payload
    return json.dumps(env).encode()


def _sample_json(event_type: str) -> dict[str, Any]:
    return sample(event_type).model_dump(mode="json")


def _refused(event_type: str, payload: dict[str, Any]) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        parse_event(_raw(event_type, payload))
    assert info.value.code == "invalid_payload"
    assert event_type in info.value.reason
    return info.value


# --- samples and round trips ---------------------------------------------------


def test_every_registered_event_has_a_sample() -> None:
    assert missing() == []
    assert set(SAMPLES) <= set(all_events()), "a sample for an event type nobody registered"


@pytest.mark.parametrize("key", KEYS, ids=[f"{t}-v{v}" for t, v in KEYS])
def test_round_trip(key: tuple[str, int]) -> None:
    payload = SAMPLES[key]
    raw = encode(_envelope(payload))
    assert len(raw) < MAX_MESSAGE_BYTES // 10
    parsed = parse_event(raw)
    assert (parsed.event_type, parsed.envelope.version) == key
    assert type(parsed.payload) is type(payload)
    assert parsed.payload == payload
    assert parsed.payload.model_dump(mode="json") == payload.model_dump(mode="json")


@pytest.mark.parametrize("key", KEYS, ids=[f"{t}-v{v}" for t, v in KEYS])
def test_json_schema_exports(key: tuple[str, int]) -> None:
    schema = all_events()[key].model_json_schema()
    assert schema["additionalProperties"] is False


# --- registry and topics ----------------------------------------------------------


def test_registry_is_consistent() -> None:
    events = all_events()
    assert len(events) == len(set(events.values())), "one class registered under two keys"
    for (event_type, version), model in events.items():
        assert model.event_type_and_version() == (event_type, version)
        assert model.TOPIC in topics.BY_NAME, f"{event_type}: topic {model.TOPIC!r} is not in the catalog"
        assert topic_of(event_type) == model.TOPIC, f"{event_type}: versions on different topics"
        assert event_type == event_type.lower() and event_type.count(".") >= 1


def test_registering_a_taken_type_and_version_fails() -> None:
    with pytest.raises(ValueError, match="registered twice"):

        @event("crm.contact.upserted", topic=topics.CRM_INGEST)
        class Impostor(Payload):
            pass


def test_event_families_share_their_base() -> None:
    """Upstream changes are versioned, commands carry a command id, requests a request id."""
    for (event_type, _), model in all_events().items():
        if model.TOPIC in (topics.CRM_INGEST, topics.PM_INGEST) and model.__module__ in (crm.__name__, pm.__name__):
            assert issubclass(model, Versioned) != event_type.endswith(".command.rejected"), event_type
        if model.TOPIC in (topics.CRM_COMMANDS, topics.PM_COMMANDS):
            assert issubclass(model, commands.Command), event_type
        if model.TOPIC == topics.HUB_REQUESTS:
            assert issubclass(model, requests.Request), event_type


# --- strictness -------------------------------------------------------------------


def test_unknown_field_is_refused() -> None:
    err = _refused("crm.contact.upserted", {**_sample_json("crm.contact.upserted"), "nickname": "Hana"})
    assert "nickname" in err.reason


def test_unknown_field_in_a_nested_part_is_refused() -> None:
    data = _sample_json("notification.requested")
    data["recipient"]["phone"] = "000"
    _refused("notification.requested", data)


@pytest.mark.parametrize(
    ("event_type", "field", "value"),
    [
        ("crm.user.upserted", "is_admin", "true"),
        ("crm.user.upserted", "version", "3"),
        ("crm.user.upserted", "version", 3.0),
        ("crm.user.upserted", "version", True),
        ("crm.user.upserted", "version", -1),
        ("crm.user.upserted", "locale", "fr"),
        ("crm.user.upserted", "id", ""),
        ("crm.user.upserted", "id", "x" * 101),
        ("pm.project.upserted", "progress_percent", 101),
        ("pm.project.upserted", "status", "done"),
        ("pm.project.upserted", "user_ids", ["pu-1", "pu-1"]),
        ("pm.task.upserted", "due_date", "30/04/2024"),
        ("pm.task.upserted", "priority", "urgent"),
        ("crm.deal.upserted", "amount", "-1"),
        ("crm.deal.upserted", "amount", "NaN"),
        ("crm.account.upserted", "custom_fields", {"Nested": {"a": 1}}),
        ("crm.command.rejected", "command_id", "not-a-uuid"),
        ("crm.command.rejected", "reason_code", "because"),
        ("hub.service_key.generate", "key_sha256", "secret-key"),
    ],
)
def test_wrong_value_is_refused(event_type: str, field: str, value: Any) -> None:
    err = _refused(event_type, {**_sample_json(event_type), field: value})
    assert field in err.reason


def test_missing_required_field_is_refused() -> None:
    data = _sample_json("pm.task.upserted")
    del data["recurring"]
    assert "recurring" in _refused("pm.task.upserted", data).reason


@pytest.mark.parametrize("email", ["", "hanako", "hanako@acme", "hana ko@acme.example", "@acme.example", "a@b@c.example"])
def test_bad_email_is_refused(email: str) -> None:
    _refused("crm.user.upserted", {**_sample_json("crm.user.upserted"), "email": email})


def test_email_is_kept_as_sent() -> None:
    """Matching (trim, case) is the services' business; the schema does not rewrite."""
    assert crm.CrmUserUpserted.model_validate_json(
        json.dumps({**_sample_json("crm.user.upserted"), "email": "Taro.YAMADA@Example.co.jp"})
    ).email == "Taro.YAMADA@Example.co.jp"


@pytest.mark.parametrize("stamp", ["2024-04-01T09:00:00", "2024-04-01", "yesterday", 1711929600])
def test_naive_or_malformed_timestamp_is_refused(stamp: Any) -> None:
    _refused("pm.task.upserted", {**_sample_json("pm.task.upserted"), "modified_at": stamp})


def test_aware_timestamp_in_any_zone_is_accepted() -> None:
    data = {**_sample_json("pm.task.upserted"), "modified_at": "2024-04-01T00:00:00Z"}
    parsed = parse_event(_raw("pm.task.upserted", data))
    assert parsed.payload.modified_at == datetime.fromisoformat("2024-04-01T09:00:00+09:00")


def test_python_side_is_strict_too() -> None:
    with pytest.raises(ValidationError):
        pm.PmPortalUpserted(id="p", name="p", plan="paid", active="yes", modified_at=datetime.now(), version=0)  # type: ignore[arg-type]


# --- rules inside a payload ----------------------------------------------------------


def _invalid(model: type[BaseModel], **changes: Any) -> None:
    key = (model.EVENT_TYPE, model.VERSION)  # type: ignore[attr-defined]
    data = {**SAMPLES[key].model_dump(mode="json"), **changes}
    with pytest.raises(ValidationError):
        model.model_validate_json(json.dumps(data))


def test_group_is_existing_or_new_not_both() -> None:
    _invalid(commands.PmProjectCreate, group_id="grp-1", new_group_name="New")
    _invalid(commands.PmProjectUpdate, group_id="grp-1", new_group_name="New")
    _invalid(requests.ProjectAssociate, group_id="grp-1", new_group_name="New")
    _invalid(requests.ProjectCreateFromRecord, group_id="grp-1", new_group_name="New")


def test_task_changes_are_explicit() -> None:
    _invalid(commands.PmTaskUpdate, changes=[])
    _invalid(commands.PmTaskUpdate, changes=[{"field": "status", "value": "open"}, {"field": "status", "value": "closed"}])
    _invalid(commands.PmTaskUpdate, changes=[{"field": "recurring", "value": True}])
    _invalid(commands.PmTaskUpdate, changes=[{"field": "status", "value": None}])
    _invalid(commands.CrmTaskUpdate, base_version=-1)
    parsed = commands.CrmTaskUpdate.model_validate_json(
        json.dumps({**_sample_json("crm.task.update"), "changes": [{"field": "due_date", "value": None}]})
    )
    assert parsed.changes == [commands.DueDateChange(field="due_date", value=None)]


def test_project_create_client_users_need_a_company() -> None:
    _invalid(commands.PmProjectCreate, new_client_company=None)
    dup = {"email": "a@acme.example", "name": "A", "crm_contact_id": "con-1"}
    _invalid(commands.PmProjectCreate, new_client_users=[dup, {**dup, "crm_contact_id": "con-2"}])


def test_updates_must_change_something() -> None:
    _invalid(commands.PmProjectUpdate, owner_id=None, group_id=None)
    _invalid(commands.PmClientUserUpdate, email=None)


def test_request_rules() -> None:
    _invalid(requests.UsersImport, client_company_id=None)
    _invalid(requests.UsersImport, import_as="portal_user")
    _invalid(requests.UsersImport, user_ids=[])
    _invalid(requests.IntegrationSwitchPortal, new_portal_id="portal-1")
    _invalid(requests.IntegrationEnable, permissions={"role": "employee", "permissions": ["add_task", "add_task"]})
    mapping = {"pm_field": "budget", "crm_module": "deals", "crm_field": "Amount"}
    _invalid(requests.IntegrationEnable, field_mapping=[mapping, {**mapping, "crm_field": "Other"}])
    _invalid(requests.IntegrationEnable, field_mapping=[{**mapping, "crm_module": "contacts"}])
    _invalid(requests.ProjectAssociate, record_type="project")


def test_crm_task_project_choice_needs_add_to_pm() -> None:
    _invalid(crm.CrmTaskUpserted, add_to_pm=False)


def test_matching_report_goes_with_its_kind() -> None:
    _invalid(notifications.NotificationRequested, matching_report=None)
    _invalid(notifications.NotificationRequested, kind="sync_stopped")
    _invalid(notifications.NotificationRequested, data={"": 1})


def test_template_data_takes_any_json() -> None:
    data = {"names": ["a", "b"], "count": 2, "ratio": 0.5, "ok": True, "none": None, "nested": {"k": [1, {"x": "y"}]}}
    raw = _raw("notification.requested", {**_sample_json("notification.requested"), "data": data})
    assert parse_event(raw).payload.data == data


def test_command_id_survives_as_uuid() -> None:
    parsed = parse_event(encode(_envelope(sample("pm.task.create"))))
    assert isinstance(parsed.payload.command_id, uuid.UUID)


def test_a_type_read_from_another_topic_is_wrong_topic_before_its_payload_is_looked_at() -> None:
    """A record posing as another producer's event is named for what it is even when its payload is invalid too
    (it was reported as invalid_payload, which hid the forgery)."""
    forged = _raw("pm.task.upserted", {"id": 7})  # neither a valid payload, nor PM's topic
    with pytest.raises(InvalidEvent) as info:
        parse_event(forged, topic=topics.HUB_REQUESTS)
    assert info.value.code == "wrong_topic"
    assert "pm.task.upserted" in info.value.reason and topics.HUB_REQUESTS in info.value.reason
    with pytest.raises(InvalidEvent) as home:
        parse_event(forged, topic=topics.PM_INGEST)
    assert home.value.code == "invalid_payload", "on its own topic, the payload is what is wrong"
    valid = encode(_envelope(sample("pm.task.upserted")))
    assert parse_event(valid, topic=topics.PM_INGEST).event_type == "pm.task.upserted"


@pytest.mark.parametrize("key", KEYS, ids=[f"{t}-v{v}" for t, v in KEYS])
def test_a_trusted_envelope_is_the_validated_one_without_the_second_validation(key: tuple[str, int]) -> None:
    """`make_event(trusted=True)` (what handlers' `emit` uses) builds the envelope without validating it again:
    it must be the very envelope, field for field and byte for byte, that validation would have built."""
    payload = SAMPLES[key]
    fields = dict(org_id="org-1", entity_key="test:1", producer="tasks", origin="pm", event_id=uuid.uuid4(),
                  correlation_id=uuid.uuid4(), causation_id=uuid.uuid4(), occurred_at=datetime.fromisoformat("2024-05-01T09:00:00+09:00"))
    checked, trusted = make_event(payload, **fields), make_event(payload, **fields, trusted=True)
    assert trusted == checked
    assert encode(trusted) == encode(checked)
    assert parse_event(encode(trusted)).payload == payload


@pytest.mark.parametrize(("field", "value"), [("entity_key", "k" * 201), ("entity_key", ""), ("org_id", "o" * 81)])
def test_a_trusted_envelope_still_refuses_a_key_or_org_a_handler_made_too_long(field: str, value: str) -> None:
    args: dict[str, Any] = dict(org_id="org-1", entity_key="test:1", producer="tasks", origin="pm")
    args[field] = value
    with pytest.raises(ValueError, match=field):
        make_event(sample("pm.task.create"), **args, trusted=True)
    with pytest.raises(ValidationError):
        make_event(sample("pm.task.create"), **args)


@pytest.mark.parametrize(("value", "accepted"), [("NaN", False), ("Infinity", False), ("-Infinity", False), ("日本語 ✓", True)])
def test_the_payload_is_judged_as_the_standard_library_wrote_it(value: str, accepted: bool) -> None:
    """The payload is written back to JSON for its strict model (pydantic-core's writer, not `json.dumps`): a NaN or
    an infinity read from the wire is still refused where a number is expected, and text outside ASCII reaches the
    model as it was sent."""
    event_type = "crm.deal.upserted" if not accepted else "pm.task.upserted"
    if accepted:
        raw = _raw(event_type, {**_sample_json(event_type), "title": value})
        assert parse_event(raw).payload.title == value
    else:
        raw = _raw(event_type, {**_sample_json(event_type), "amount": 1.5}).replace(b'"amount": 1.5', f'"amount": {value}'.encode())
        assert value.encode() in raw
        assert "amount" in _refused_raw(raw).reason


def _refused_raw(raw: bytes) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    return info.value


def test_a_lone_surrogate_escape_is_refused_by_the_envelope_parser() -> None:
    """Why the payload's re-encoding need not handle a string UTF-8 cannot carry: it never gets that far."""
    raw = _raw("pm.task.upserted", {**_sample_json("pm.task.upserted"), "title": "x"}).replace(b'"title": "x"', b'"title": "\\ud800"')
    assert b"\\ud800" in raw
    assert _refused_raw(raw).code == "malformed_json"
