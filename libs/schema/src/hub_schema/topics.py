"""The topic catalog: every topic the hub uses, its key, partitions, producers and consumers.

The producers and consumers are who may write and read each topic: the broker's ACLs
are generated from them (`hub_platform.kafka_acls`), so they cannot drift. ("echo" is the
platform's diagnostic service; "any subscriber" means every authenticated principal.)

Names here are logical; `TopicNames(prefix)` turns them into the names on the
broker, so a test run (or a second environment on the same cluster) can use
its own prefix. Topics are created by the services at start-up from this list
(`hub_platform.kafka_admin.ensure_topics`), never by broker auto-creation.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    key: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    description: str


CRM_INGEST = "crm.ingest"
PM_INGEST = "pm.ingest"
CRM_COMMANDS = "crm.commands"
PM_COMMANDS = "pm.commands"
HUB_REQUESTS = "hub.requests"
IDENTITY_EVENTS = "identity.events"
LINKING_EVENTS = "linking.events"
TASKS_EVENTS = "tasks.events"
NOTIFICATION_REQUESTS = "notifications.requests"
NOTIFICATION_OUTCOMES = "notifications.outcomes"
DEAD_LETTERS = "hub.deadletters"

CATALOG: tuple[Topic, ...] = (
    Topic(CRM_INGEST, 6, "<entity type>:<CRM record id>", ("crm connector", "sandbox"),
          ("identity", "linking", "tasks", "echo"), "Change events from the CRM: users, accounts, contacts, deals, leads, tasks, notes."),
    Topic(PM_INGEST, 6, "<entity type>:<PM record id>", ("pm connector", "sandbox"),
          ("identity", "linking", "tasks"), "Change events from the PM tool: portals, portal users, client companies, client users, projects, groups, tasks, comments."),
    Topic(CRM_COMMANDS, 6, "<entity type>:<CRM record id or hub id>", ("identity", "linking", "tasks"),
          ("crm connector", "sandbox"), "Commands the hub sends to the CRM side (create task, add note, ...)."),
    Topic(PM_COMMANDS, 6, "<entity type>:<PM record id or hub id>", ("identity", "linking", "tasks"),
          ("pm connector", "sandbox"), "Commands the hub sends to the PM side (create project, client user, task, ...)."),
    Topic(HUB_REQUESTS, 6, "org:<org id>", ("CRM UI / admin tools", "sandbox"),
          ("identity", "linking", "notifications"), "Requests made by CRM users through the integration's UI: settings, imports, associations, resync, notification preferences."),
    Topic(IDENTITY_EVENTS, 6, "<org id>:<subject>", ("identity",),
          ("linking", "tasks"), "User and customer mappings, permission profiles, import outcomes."),
    Topic(LINKING_EVENTS, 6, "<org id>:<subject>", ("linking",),
          ("identity", "tasks", "notifications", "CRM UI / admin tools"), "Integration settings state, record links, matching reports."),
    Topic(TASKS_EVENTS, 6, "<org id>:task:<hub task id>", ("tasks", "echo"),
          ("CRM UI / admin tools",), "Task mirroring decisions and refusals, for the CRM side to show."),
    Topic(NOTIFICATION_REQUESTS, 3, "<org id>:<request id>", ("identity", "linking", "tasks"),
          ("notifications",), "Requests to e-mail a person (failures, reports)."),
    Topic(NOTIFICATION_OUTCOMES, 3, "<org id>:<request id>", ("notifications",),
          ("any subscriber",), "Outcome of every notification request: sent, failed, suppressed."),
    Topic(DEAD_LETTERS, 3, "<consumer>", ("every service",),
          ("hub-deadletters CLI",), "Messages a service could not process, with the original bytes, the error and the attempts."),
)

BY_NAME = {t.name: t for t in CATALOG}


class TopicNames:
    """Resolves logical topic names to broker topic names under a prefix."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def __call__(self, logical: str) -> str:
        if logical not in BY_NAME:
            raise KeyError(f"{logical!r} is not in the topic catalog")
        return f"{self.prefix}{logical}"

    def logical(self, physical: str) -> str:
        return physical[len(self.prefix):] if physical.startswith(self.prefix) else physical
