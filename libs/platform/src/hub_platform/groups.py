"""A consumer group seen from the outside: which member owns which partition, the lag, and removing static members.

Used by `make status` / `make scale`, the scaling tests and the bench. Everything goes through aiokafka's admin
client (DescribeGroups, OffsetFetch, ListOffsets), so what it reports is what the broker's group coordinator says,
not what a replica believes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from aiokafka.protocol.group import MemberAssignment
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String

Partition = tuple[str, int]


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str
    partitions: frozenset[Partition]
    topics: frozenset[str] = frozenset()

    @property
    def instance_id(self) -> str | None:
        """A static member's id is `<group.instance.id>-<uuid>`; a dynamic one's `<client id>-<uuid>`."""
        head = self.member_id.rsplit("-", 5)[0]
        return None if head == self.client_id else head


@dataclass
class GroupView:
    group: str
    state: str
    members: list[Member] = field(default_factory=list)

    def owners(self) -> dict[Partition, list[str]]:
        """partition -> member ids that the coordinator assigned it to (more than one would be a bug)."""
        out: dict[Partition, list[str]] = {}
        for m in self.members:
            for p in m.partitions:
                out.setdefault(p, []).append(m.member_id)
        return out

    @property
    def topics(self) -> set[str]:
        """What the members subscribe to."""
        return {t for m in self.members for t in m.topics}

    def owned_twice(self) -> list[Partition]:
        counts = Counter(p for m in self.members for p in m.partitions)
        return sorted(p for p, n in counts.items() if n > 1)

    def reading(self, topics: Iterable[str]) -> GroupView:
        """Only the members subscribed to one of `topics` (a client reading the group's topics under another name
        would show here too; services' group ids carry the topic prefix, `KafkaSettings.group_id`)."""
        wanted = set(topics)
        return GroupView(self.group, self.state, [m for m in self.members if m.topics & wanted])

    def settled(self, partitions: Iterable[Partition], members: int | None = None) -> bool:
        """Stable, every partition owned exactly once, and `members` members reading them when given."""
        wanted = set(partitions)
        view = self.reading({t for t, _ in wanted})
        owners = {p: o for p, o in view.owners().items() if p in wanted}
        return (
            self.state == "Stable"
            and set(owners) == wanted
            and all(len(v) == 1 for v in owners.values())
            and (members is None or len(view.members) == members)
        )


async def describe_group(admin: AIOKafkaAdminClient, group: str) -> GroupView:
    response = (await admin.describe_consumer_groups([group]))[0]
    error_code, name, state, _protocol_type, _protocol, members = response.groups[0][:6]
    if error_code:
        raise for_code(error_code)(f"describe group {group}")
    view = GroupView(name, state)
    for member_id, client_id, host, metadata, assignment in members:
        topics = frozenset(ConsumerProtocolMemberMetadata.decode(metadata).subscription) if metadata else frozenset()
        parts: set[Partition] = set()
        if assignment:
            for topic, numbers in MemberAssignment.decode(assignment).assignment:
                parts.update((topic, n) for n in numbers)
        view.members.append(Member(member_id, client_id, host, frozenset(parts), topics))
    return view


async def topic_partitions(admin: AIOKafkaAdminClient, topics: Iterable[str]) -> list[Partition]:
    described = await admin.describe_topics(list(topics))
    return sorted((t["topic"], p["partition"]) for t in described for p in t["partitions"])


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed if self.committed is not None and self.committed >= 0 else 0)


async def group_lag(admin: AIOKafkaAdminClient, bootstrap: dict[str, object], group: str,
                    partitions: Iterable[Partition]) -> list[PartitionLag]:
    """Committed offset, end offset and lag of each partition (end offsets from a group-less consumer)."""
    tps = [TopicPartition(t, p) for t, p in partitions]
    committed = await admin.list_consumer_group_offsets(group, partitions=tps)
    consumer = AIOKafkaConsumer(**bootstrap)  # type: ignore[arg-type]
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return [
        PartitionLag(tp.topic, tp.partition, committed[tp].offset if tp in committed else None, ends[tp])
        for tp in tps
    ]


async def wait_settled(admin: AIOKafkaAdminClient, group: str, partitions: Iterable[Partition], *,
                       members: int | None = None, excluding: Callable[[GroupView], bool] = lambda v: True,
                       timeout: float = 120.0, interval: float = 0.05) -> tuple[float, GroupView]:
    """Poll the coordinator until the group is settled (see `GroupView.settled`) and `excluding(view)` holds;
    returns the seconds it took and the view. Raises TimeoutError with the last view otherwise."""
    wanted = list(partitions)
    started = time.monotonic()
    view: GroupView | None = None
    while time.monotonic() - started < timeout:
        try:
            view = await describe_group(admin, group)
        except Exception:  # noqa: BLE001 - coordinator moving or loading: poll again
            view = None
        if view is not None and view.settled(wanted, members) and excluding(view):
            return time.monotonic() - started, view.reading({t for t, _ in wanted})
        await asyncio.sleep(interval)
    raise TimeoutError(f"group {group} not settled after {timeout:.0f}s: {view}")


# -- removing static members (KIP-345) ----------------------------------------------------------------------------
# A static member (group.instance.id set) does not send LeaveGroup when it stops, so that a restart keeps its
# partitions; removed for good, it would hold them for a whole session timeout. Kafka's answer is LeaveGroup v3+
# naming the instance id (Java: Admin.removeMembersFromConsumerGroup); aiokafka 0.14 only has v0/v1, so these two
# structs add v3 (non-flexible; Kafka 2.4 and later accept it) with aiokafka's own protocol types.


class _LeaveGroupResponseV3(Response):
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")), ("error_code", Int16))),
    )


class _LeaveGroupRequestV3(RequestStruct):
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = _LeaveGroupResponseV3
    SCHEMA = Schema(
        ("group", String("utf-8")),
        ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")))),
    )


class RemoveStaticMembers(Request[_LeaveGroupRequestV3]):
    API_KEY: ClassVar[int] = 13

    def __init__(self, group: str, instance_ids: Iterable[str]) -> None:
        self.group = group
        self.instance_ids = list(instance_ids)

    def build(self, request_struct_class: type[_LeaveGroupRequestV3]) -> _LeaveGroupRequestV3:
        return request_struct_class(self.group, [("", i) for i in self.instance_ids])


async def remove_static_members(admin: AIOKafkaAdminClient, group: str, instance_ids: Iterable[str]) -> dict[str, int]:
    """Make the coordinator drop these static members now (their partitions move at once).
    Returns instance id -> Kafka error code (0 ok; 25 UNKNOWN_MEMBER_ID: it was not in the group)."""
    ids = list(instance_ids)
    if not ids:
        return {}
    node = await admin.find_coordinator(group)
    response = await admin._send_request(RemoveStaticMembers(group, ids), node)  # noqa: SLF001 - see above
    if response.error_code:
        raise for_code(response.error_code)(f"LeaveGroup for {group}")
    return {instance: code for _member, instance, code in response.members}
