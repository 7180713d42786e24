"""The one envelope every message on the hub's topics carries.

The envelope is what the platform reads (de-duplication, tracing, tenancy,
per-key order); the payload is what a handler reads. Both are strict:
anything that arrives from outside is validated before a handler sees it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Generic, Literal, TypeVar

import pydantic_core
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from hub_schema.registry import Payload, allowed_topics, lookup

UTC = timezone.utc

Origin = Literal["crm", "pm", "hub"]
"""Where the chain of events started: provenance for people reading events, logs, dead letters and outcomes.

`HandlerContext.emit` copies it from the event being handled (so it names where the chain started; `producer`
names who wrote this event), notifications keeps it with each delivery and puts it on the outcome. No rule
decides anything by it, loop prevention included: an upstream's own edit and the echo of a hub command both
arrive with origin crm/pm, so it could not tell them apart. Loops are stopped by content (a value equal to the
agreed one changes nothing), by the `command_id` of the hub's own commands, and by a per-task command budget
(`hub_tasks.domain`)."""

MAX_MESSAGE_BYTES = 256 * 1024
"""Larger messages are refused (dead-lettered) before parsing."""


_ENTITY_KEY_MAX = 200
_ORG_ID_MAX = 80


class Envelope(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    event_id: uuid.UUID = Field(description="Unique id of this event; the de-duplication key.")
    event_type: str = Field(min_length=3, max_length=120, pattern=r"^[a-z][a-z0-9_.]+$")
    version: int = Field(ge=1, description="Schema version of the payload.")
    occurred_at: AwareDatetime
    producer: str = Field(min_length=1, max_length=80)
    org_id: str = Field(min_length=1, max_length=_ORG_ID_MAX, description="Tenant: the CRM org.")
    entity_key: str = Field(min_length=1, max_length=_ENTITY_KEY_MAX, description="Kafka key; per-entity order.")
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    origin: Origin = Field(description="Where the chain of events started (provenance only; see `Origin`).")
    payload: dict[str, Any]


class InvalidEvent(Exception):
    """A message that can never be processed; it goes to the dead-letter topic with `reason`."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


P = TypeVar("P", bound=Payload)


class Event(BaseModel, Generic[P]):
    """A parsed message: the envelope plus its typed payload."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    envelope: Envelope
    payload: P

    @property
    def event_id(self) -> uuid.UUID:
        return self.envelope.event_id

    @property
    def event_type(self) -> str:
        return self.envelope.event_type

    @property
    def org_id(self) -> str:
        return self.envelope.org_id


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _payload_json(payload: dict[str, Any]) -> bytes:
    """The payload as JSON again, to validate it in JSON mode (strict models take dates and UUIDs as strings
    only there). pydantic-core's writer is 5x the standard library's; NaN and infinities are written as the
    constants the standard library writes, so what the payload's models accept or refuse does not change.
    (A lone surrogate escape, which UTF-8 could not carry, never gets here: the envelope's parser refuses it.)"""
    return pydantic_core.to_json(payload, inf_nan_mode="constants")


def parse_event(raw: bytes | None, topic: str | None = None) -> Event[Any]:
    """Parse and validate one message, or raise InvalidEvent with a reason a person can act on.

    `topic`, the logical topic the message was read from: an event type is accepted only from its catalog topic
    (`wrong_topic`), checked before the payload, so a record posing as another producer's event is named for
    what it is even when its payload would not validate either."""
    if raw is None:
        raise InvalidEvent("empty_message", "message has no value")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidEvent("oversized", f"message is {len(raw)} bytes, the limit is {MAX_MESSAGE_BYTES}")
    try:
        envelope = Envelope.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise InvalidEvent("malformed_json", _first_error(exc)) from None
        raise InvalidEvent("invalid_envelope", _first_error(exc)) from None
    model = lookup(envelope.event_type, envelope.version)
    if model is None:
        if lookup(envelope.event_type, None) is None:
            raise InvalidEvent("unknown_event_type", f"no event type {envelope.event_type!r} in the schema")
        raise InvalidEvent(
            "unsupported_version",
            f"{envelope.event_type!r} has no schema version {envelope.version}",
        )
    if topic is not None and topic not in (allowed := allowed_topics(envelope.event_type)):
        raise InvalidEvent("wrong_topic", f"{envelope.event_type!r} is accepted only from {', '.join(sorted(allowed))}, "
                                          f"not from {topic}")
    try:
        payload = model.model_validate_json(_payload_json(envelope.payload))
    except ValidationError as exc:
        raise InvalidEvent("invalid_payload", f"{envelope.event_type} v{envelope.version}: {_first_error(exc)}") from None
    return Event(envelope=envelope, payload=payload)


def make_event(
    payload: Payload,
    *,
    org_id: str,
    entity_key: str,
    producer: str,
    origin: Origin,
    correlation_id: uuid.UUID | None = None,
    causation_id: uuid.UUID | None = None,
    event_id: uuid.UUID | None = None,
    occurred_at: datetime | None = None,
    trusted: bool = False,
) -> Envelope:
    """Build the envelope for a payload (used by producers: services, the sandbox, tests).

    `trusted`: the caller is a handler emitting a payload model it constructed (so validated), with the ids,
    org and origin of an envelope that was validated when it arrived; the envelope is then built without
    validating it again (a third of `emit`'s cost). Only the entity key and the org, which a handler may compose
    or pass, are checked."""
    event_type, version = type(payload).event_type_and_version()
    event_id = event_id or uuid.uuid4()
    if trusted:
        for name, value, most in (("entity_key", entity_key, _ENTITY_KEY_MAX), ("org_id", org_id, _ORG_ID_MAX)):
            if not 1 <= len(value) <= most:
                raise ValueError(f"{name} must be 1 to {most} characters, not {len(value)}: {value[:80]!r}")
        return Envelope.model_construct(
            event_id=event_id, event_type=event_type, version=version, occurred_at=occurred_at or datetime.now(UTC),
            producer=producer, org_id=org_id, entity_key=entity_key, correlation_id=correlation_id or event_id,
            causation_id=causation_id, origin=origin, payload=payload.model_dump(mode="json"),
        )
    return Envelope(
        event_id=event_id,
        event_type=event_type,
        version=version,
        occurred_at=occurred_at or datetime.now(UTC),
        producer=producer,
        org_id=org_id,
        entity_key=entity_key,
        correlation_id=correlation_id or event_id,
        causation_id=causation_id,
        origin=origin,
        payload=payload.model_dump(mode="json"),
    )


def encode(envelope: Envelope) -> bytes:
    return envelope.model_dump_json().encode()
