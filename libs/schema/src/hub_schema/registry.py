"""Which payload model belongs to which event type and version.

Every payload class declares its event type with the `event(...)` decorator;
the parser looks it up here, so an event type nobody declared is an error.
"""

from __future__ import annotations

from typing import Callable, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

_REGISTRY: dict[tuple[str, int], type[Payload]] = {}
_TOPIC_OF: dict[str, str] = {}


class Payload(BaseModel):
    """Base of every payload: strict, no unknown fields, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    EVENT_TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str] = ""

    @classmethod
    def event_type_and_version(cls) -> tuple[str, int]:
        if not cls.EVENT_TYPE:
            raise TypeError(f"{cls.__name__} is not registered with @event(...)")
        return cls.EVENT_TYPE, cls.VERSION


T = TypeVar("T", bound=type["Payload"])


def event(event_type: str, *, topic: str, version: int = 1) -> Callable[[T], T]:
    """Register a payload class as event `event_type` (schema `version`) published on logical `topic`."""

    def register(cls: T) -> T:
        key = (event_type, version)
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"event type {event_type} v{version} registered twice")
        cls.EVENT_TYPE = event_type
        cls.VERSION = version
        cls.TOPIC = topic
        _REGISTRY[key] = cls
        _TOPIC_OF[event_type] = topic
        return cls

    return register


def lookup(event_type: str, version: int | None) -> type[Payload] | None:
    """The payload model for a type and version; with version None, any version of the type."""
    _load_all()
    if version is None:
        return next((m for (t, _), m in _REGISTRY.items() if t == event_type), None)
    return _REGISTRY.get((event_type, version))


def all_events() -> dict[tuple[str, int], type[Payload]]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def topic_of(event_type: str) -> str:
    _load_all()
    return _TOPIC_OF[event_type]


def allowed_topics(event_type: str) -> frozenset[str]:
    """The logical topics an event type is accepted from: the one the catalog gives it, nothing else.

    Consumers dead-letter an event read from any other topic (`wrong_topic`), so a producer that may
    write one topic cannot pass its records off as events of another (a PM connector posing as linking).
    """
    _load_all()
    topic = _TOPIC_OF.get(event_type)
    return frozenset((topic,)) if topic else frozenset()


def event_types_on(topic: str) -> tuple[str, ...]:
    """Every event type whose home is logical `topic` (what a producer ACL for that topic must allow)."""
    _load_all()
    return tuple(sorted(t for t, home in _TOPIC_OF.items() if home == topic))


_loaded = False


def _load_all() -> None:
    """Import every events module once so their decorators have run."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    import pkgutil

    import hub_schema.events as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{pkg.__name__}.{info.name}")
