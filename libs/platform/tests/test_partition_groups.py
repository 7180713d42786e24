"""`partition_groups`: how one fetched batch is split for concurrent transactions without breaking per-key order."""

from __future__ import annotations

from dataclasses import dataclass

from hub_platform.consumer import partition_groups


@dataclass
class R:
    topic: str
    partition: int
    offset: int


def batch(sizes: dict[tuple[str, int], int]) -> list[R]:
    out = []
    for (topic, partition), n in sizes.items():
        out.extend(R(topic, partition, o) for o in range(n))
    # interleave as a fetch returns them: partitions mixed, each in offset order
    return sorted(out, key=lambda r: (r.offset, r.topic, r.partition))


def test_a_partition_is_never_split_and_keeps_its_order() -> None:
    records = batch({("a", 0): 120, ("a", 1): 80, ("a", 2): 50, ("b", 0): 200, ("b", 1): 10})
    groups = partition_groups(records, 2)
    assert len(groups) == 2
    owner: dict[tuple[str, int], int] = {}
    for i, group in enumerate(groups):
        for r in group:
            assert owner.setdefault((r.topic, r.partition), i) == i, "one partition in two groups"
        for key in {(r.topic, r.partition) for r in group}:
            offsets = [r.offset for r in group if (r.topic, r.partition) == key]
            assert offsets == sorted(offsets)
    assert sorted((r.topic, r.partition, r.offset) for g in groups for r in g) == sorted(
        (r.topic, r.partition, r.offset) for r in records)


def test_groups_are_balanced_by_record_count() -> None:
    groups = partition_groups(batch({("a", p): n for p, n in enumerate([200, 120, 80])}), 2)
    assert sorted(len(g) for g in groups) == [200, 200]
    uneven = partition_groups(batch({("a", p): n for p, n in enumerate([200, 120, 80, 50, 10])}), 2)
    assert sorted(len(g) for g in uneven) == [210, 250], "largest first, each on the lightest group"


def test_one_group_one_partition_or_nothing() -> None:
    records = batch({("a", 0): 5, ("a", 1): 5})
    assert partition_groups(records, 1) == [records]
    single = batch({("a", 3): 7})
    assert partition_groups(single, 4) == [single]
    assert partition_groups([], 2) == []
    assert len(partition_groups(batch({("a", p): 1 for p in range(3)}), 8)) == 3
