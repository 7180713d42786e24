"""The hub's shared event contract."""

from hub_schema.envelope import Envelope, Event, InvalidEvent, encode, make_event, parse_event
from hub_schema.registry import Payload, all_events, event, lookup

__all__ = ["Envelope", "Event", "InvalidEvent", "Payload", "all_events", "encode", "event", "lookup", "make_event", "parse_event"]
