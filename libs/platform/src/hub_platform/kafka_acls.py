"""The broker's ACLs, generated from the topic catalog so they cannot drift from it.

Every service and every upstream connector is its own SASL principal. A principal may write
the topics whose catalog `producers` name one of its roles, read the topics whose `consumers`
name one, join its own consumer group and nothing else. Topic names carry the deployment's
prefix (`TopicNames`) and are bound LITERAL, so `t1.crm.ingest` never covers `t1.crm.ingest2`
or another prefix's topics. Consumer groups are the service names under the same prefix
(`KafkaSettings.group_id`), bound LITERAL too.

`bindings(prefix)` is pure; `hub_platform.kafka_admin.apply_acls` puts them on a broker.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub_schema.topics import CATALOG, Topic

ADMIN = "admin"
"""The super user: the broker's inter-broker identity, topic creation and the ACLs themselves."""
ANY_SUBSCRIBER = "any subscriber"
"""A catalog consumer meaning every authenticated principal (bound to the wildcard principal User:*)."""
EVERY_SERVICE = "every service"
HUB_SERVICES = ("identity", "linking", "tasks", "notifications")
CLUSTER = "kafka-cluster"


@dataclass(frozen=True)
class Principal:
    name: str
    roles: tuple[str, ...]
    """The catalog producer/consumer names this principal acts as."""
    group: str | None
    """The consumer group it may join, before the deployment's prefix (None: it reads without one)."""
    replays: bool = False
    """May write back to every topic a service consumes (the dead-letter replay)."""


def _service(name: str) -> Principal:
    return Principal(name, (name, EVERY_SERVICE), group=name)


PRINCIPALS: dict[str, Principal] = {
    **{name: _service(name) for name in HUB_SERVICES},
    "echo": _service("echo"),
    "crm-connector": Principal("crm-connector", ("crm connector",), group="crm-connector"),
    "pm-connector": Principal("pm-connector", ("pm connector",), group="pm-connector"),
    "ui": Principal("ui", ("CRM UI / admin tools",), group="ui"),
    # The sandbox stands in for both connectors and the CRM UI, and runs on the platform (dead letters).
    "sandbox": Principal("sandbox", ("sandbox", "crm connector", "pm connector", "CRM UI / admin tools", EVERY_SERVICE),
                         group="sandbox"),
    "deadletters": Principal("deadletters", ("hub-deadletters CLI",), group=None, replays=True),
}


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW rule: `principal` ("User:<name>") may `operation` on the resource."""

    principal: str
    resource_type: str  # "TOPIC" | "GROUP" | "CLUSTER"
    resource_name: str
    operation: str  # "READ" | "WRITE" | "IDEMPOTENT_WRITE"
    pattern_type: str = "LITERAL"
    host: str = "*"


def _roles_known() -> set[str]:
    return {role for p in PRINCIPALS.values() for role in p.roles} | {ANY_SUBSCRIBER}


def unknown_roles(catalog: tuple[Topic, ...] = CATALOG) -> list[str]:
    """Catalog producers/consumers no principal acts as (they would get no access at all)."""
    known = _roles_known()
    return sorted({r for t in catalog for r in (*t.producers, *t.consumers)} - known)


def writes(principal: Principal, catalog: tuple[Topic, ...] = CATALOG) -> list[str]:
    """Logical topics the principal may write."""
    own = {t.name for t in catalog if set(principal.roles) & set(t.producers)}
    if principal.replays:
        own |= {t.name for t in catalog if set(t.consumers) & set(HUB_SERVICES)}
    return sorted(own)


def reads(principal: Principal, catalog: tuple[Topic, ...] = CATALOG) -> list[str]:
    """Logical topics the principal may read (topics for "any subscriber" are read by everyone)."""
    return sorted(t.name for t in catalog if set(principal.roles) & set(t.consumers))


def bindings(prefix: str = "", catalog: tuple[Topic, ...] = CATALOG) -> list[AclBinding]:
    """Every ALLOW rule for a deployment whose topics carry `prefix`."""
    missing = unknown_roles(catalog)
    if missing:
        raise ValueError(f"catalog names producers/consumers no principal acts as: {missing}")
    out: set[AclBinding] = set()
    for p in PRINCIPALS.values():
        user = f"User:{p.name}"
        for topic in writes(p, catalog):
            out.add(AclBinding(user, "TOPIC", prefix + topic, "WRITE"))
        for topic in reads(p, catalog):
            out.add(AclBinding(user, "TOPIC", prefix + topic, "READ"))
        if writes(p, catalog):
            # Implied by WRITE on a topic since Kafka 3.0 (KIP-679); stated so the rules say what the producers do.
            out.add(AclBinding(user, "CLUSTER", CLUSTER, "IDEMPOTENT_WRITE"))
        if p.group and reads(p, catalog):
            out.add(AclBinding(user, "GROUP", prefix + p.group, "READ"))
    for t in catalog:
        if ANY_SUBSCRIBER in t.consumers:
            out.add(AclBinding("User:*", "TOPIC", prefix + t.name, "READ"))
    return sorted(out)


def writer_of(logical_topic: str, catalog: tuple[Topic, ...] = CATALOG) -> str:
    """A principal that may write the topic (the first in PRINCIPALS order): whom a test impersonates."""
    for p in PRINCIPALS.values():
        if logical_topic in writes(p, catalog) and not p.replays:
            return p.name
    raise LookupError(f"no principal writes {logical_topic}")


def reader_of(logical_topic: str, catalog: tuple[Topic, ...] = CATALOG) -> str:
    """A principal that may read the topic (the first in PRINCIPALS order; any one for "any subscriber")."""
    for p in PRINCIPALS.values():
        if logical_topic in reads(p, catalog):
            return p.name
    topic = next(t for t in catalog if t.name == logical_topic)
    if ANY_SUBSCRIBER in topic.consumers:
        return next(iter(PRINCIPALS))
    raise LookupError(f"no principal reads {logical_topic}")
