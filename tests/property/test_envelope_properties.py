"""Property tests of the envelope parser: whatever bytes arrive, it returns an Event or raises InvalidEvent.

A consumer dead-letters on InvalidEvent and retries on anything else, so any other exception
escaping parse_event would be a poison message that blocks a partition forever.
"""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hub_schema import Event, InvalidEvent, encode, make_event, parse_event
from hub_schema.envelope import MAX_MESSAGE_BYTES
from hub_schema.registry import all_events
from hub_schema.samples import sample

SAMPLE_KEYS = sorted(all_events())
KNOWN_CODES = {"empty_message", "oversized", "malformed_json", "invalid_envelope", "unknown_event_type",
               "unsupported_version", "invalid_payload"}


def _valid(event_type: str, version: int) -> bytes:
    env = make_event(sample(event_type, version), org_id="org-1", entity_key="k:1", producer="prop", origin="crm")
    return encode(env)


def parse_or_invalid(raw: bytes | None) -> Event | InvalidEvent:
    try:
        result = parse_event(raw)
    except InvalidEvent as exc:
        assert exc.code in KNOWN_CODES, exc.code
        assert exc.reason.strip(), "an InvalidEvent must say why"
        return exc
    assert isinstance(result, Event)
    return result


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_escape_as_another_exception(raw: bytes) -> None:
    parse_or_invalid(raw)


@settings(max_examples=300)
@given(json_values)
def test_arbitrary_json_documents_are_rejected_with_a_code(value: object) -> None:
    out = parse_or_invalid(json.dumps(value).encode())
    assert isinstance(out, InvalidEvent)  # no random JSON is a complete envelope


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(SAMPLE_KEYS), data=st.data())
def test_mutated_valid_envelopes_parse_or_are_rejected(key: tuple[str, int], data: st.DataObject) -> None:
    raw = _valid(*key)
    doc = json.loads(raw)
    mutation = data.draw(st.sampled_from(["drop", "replace", "payload_drop", "payload_replace", "truncate", "flip"]))
    if mutation == "drop":
        doc.pop(data.draw(st.sampled_from(sorted(doc))))
        mutated = json.dumps(doc).encode()
    elif mutation == "replace":
        doc[data.draw(st.sampled_from(sorted(doc)))] = data.draw(json_values)
        mutated = json.dumps(doc).encode()
    elif mutation == "payload_drop" and doc["payload"]:
        doc["payload"].pop(data.draw(st.sampled_from(sorted(doc["payload"]))))
        mutated = json.dumps(doc).encode()
    elif mutation == "payload_replace" and doc["payload"]:
        doc["payload"][data.draw(st.sampled_from(sorted(doc["payload"])))] = data.draw(json_values)
        mutated = json.dumps(doc).encode()
    elif mutation == "truncate":
        mutated = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        i = data.draw(st.integers(0, len(raw) - 1))
        mutated = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1:]
    parse_or_invalid(mutated)


@pytest.mark.parametrize("key", SAMPLE_KEYS, ids=lambda k: f"{k[0]}.v{k[1]}")
def test_every_sample_round_trips(key: tuple[str, int]) -> None:
    raw = _valid(*key)
    event = parse_event(raw)
    assert (event.event_type, event.envelope.version) == key
    assert event.payload == sample(*key)
    assert parse_event(encode(event.envelope)).envelope == event.envelope


@settings(max_examples=100)
@given(key=st.sampled_from(SAMPLE_KEYS), version=st.integers(2, 10_000))
def test_wrong_schema_version_is_refused_as_unsupported(key: tuple[str, int], version: int) -> None:
    assume((key[0], version) not in all_events())
    doc = json.loads(_valid(*key))
    doc["version"] = version
    out = parse_or_invalid(json.dumps(doc).encode())
    assert isinstance(out, InvalidEvent) and out.code == "unsupported_version"


@settings(max_examples=100)
@given(name=st.from_regex(r"^[a-z][a-z0-9_.]{2,40}$", fullmatch=True))
def test_unknown_event_type_is_refused_with_its_name(name: str) -> None:
    assume(name not in {k[0] for k in SAMPLE_KEYS})
    doc = json.loads(_valid("diag.ping", 1))
    doc["event_type"] = name
    out = parse_or_invalid(json.dumps(doc).encode())
    assert isinstance(out, InvalidEvent) and out.code == "unknown_event_type" and name in out.reason


@settings(max_examples=20)
@given(extra=st.integers(1, 4096))
def test_oversized_is_refused_before_parsing(extra: int) -> None:
    out = parse_or_invalid(b"x" * (MAX_MESSAGE_BYTES + extra))
    assert isinstance(out, InvalidEvent) and out.code == "oversized"


def test_empty_value_is_refused() -> None:
    out = parse_or_invalid(None)
    assert isinstance(out, InvalidEvent) and out.code == "empty_message"


@settings(max_examples=100)
@given(org=st.text(min_size=1, max_size=80).filter(lambda s: s.strip() == s), seq=st.integers(0, 2**31))
def test_any_org_id_parses_tenancy_is_a_service_decision(org: str, seq: int) -> None:
    from hub_schema.events.diagnostics import DiagPing

    env = make_event(DiagPing(seq=seq), org_id=org, entity_key="k", producer="p", origin="crm", event_id=uuid.uuid4())
    assert parse_event(encode(env)).org_id == org
