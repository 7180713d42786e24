"""hub-deadletters: list the dead-letter topic and replay chosen messages to where they came from.

    hub-deadletters list [--consumer tasks] [--code invalid_payload] [--limit 50] [--json]
    hub-deadletters replay <partition>:<offset> [...]   # republish the original bytes

A replayed message goes back to its original topic with its original key and a
`x-replayed-from` header; the inbox only ever recorded events that succeeded, so
a fixed-up or retried event is processed normally.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from hub_platform.outbox import make_producer
from hub_platform.settings import ServiceSettings
from hub_schema.topics import DEAD_LETTERS, TopicNames


@dataclass
class DeadLetter:
    partition: int
    offset: int
    timestamp: int
    headers: dict[str, str]
    value: bytes

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"

    def summary(self) -> dict[str, object]:
        h = self.headers
        return {
            "ref": self.ref, "consumer": h.get("x-dlq-consumer"), "code": h.get("x-dlq-code"),
            "reason": h.get("x-dlq-reason"), "attempts": int(h.get("x-dlq-attempts", "0")),
            "from": f"{h.get('x-dlq-topic')}[{h.get('x-dlq-partition')}]@{h.get('x-dlq-offset')}",
            "key": h.get("x-dlq-key"), "bytes": len(self.value),
        }


async def read_all(settings: ServiceSettings, timeout_ms: int = 1500) -> list[DeadLetter]:
    """Every message now on the dead-letter topic (reads to the end offsets, no consumer group)."""
    topic = TopicNames(settings.kafka.topic_prefix)(DEAD_LETTERS)
    consumer = AIOKafkaConsumer(**settings.kafka.client_options(), enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - first metadata fetch for an unseen topic
            partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        out: list[DeadLetter] = []
        while True:
            positions = [await consumer.position(tp) for tp in partitions]
            if all(pos >= end[tp] for pos, tp in zip(positions, partitions)):
                break
            batch = await consumer.getmany(timeout_ms=timeout_ms)
            if not batch:
                break
            for records in batch.values():
                for r in records:
                    headers = {k: v.decode("utf-8", "replace") for k, v in r.headers}
                    out.append(DeadLetter(r.partition, r.offset, r.timestamp, headers, r.value or b""))
        # At-least-once: a relay killed between publishing and marking publishes a dead letter again;
        # copies share their source coordinates, so list each source message once.
        unique: dict[tuple[str | None, ...], DeadLetter] = {}
        for d in sorted(out, key=lambda d: d.timestamp):
            h = d.headers
            unique.setdefault((h.get("x-dlq-consumer"), h.get("x-dlq-topic"), h.get("x-dlq-partition"), h.get("x-dlq-offset")), d)
        return list(unique.values())
    finally:
        await consumer.stop()


async def replay(settings: ServiceSettings, refs: list[str]) -> list[str]:
    letters = {d.ref: d for d in await read_all(settings)}
    missing = [r for r in refs if r not in letters]
    if missing:
        raise SystemExit(f"no dead letter at {', '.join(missing)}")
    producer = make_producer(settings.kafka)
    await producer.start()
    done = []
    try:
        for ref in refs:
            d = letters[ref]
            headers = [(k.removeprefix("x-original-"), v.encode()) for k, v in d.headers.items() if k.startswith("x-original-")]
            headers.append(("x-replayed-from", f"{DEAD_LETTERS}:{ref}".encode()))
            await producer.send_and_wait(d.headers["x-dlq-topic"], d.value, key=d.headers.get("x-dlq-key", "").encode() or None, headers=headers)
            done.append(f"{ref} -> {d.headers['x-dlq-topic']}")
    finally:
        await producer.stop()
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hub-deadletters", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="list dead letters")
    ls.add_argument("--consumer")
    ls.add_argument("--code")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--json", action="store_true")
    rp = sub.add_parser("replay", help="republish dead letters to their original topic")
    rp.add_argument("refs", nargs="+", help="<partition>:<offset> as shown by list")
    args = parser.parse_args(argv)
    settings = ServiceSettings()
    if args.cmd == "list":
        letters = [d.summary() for d in asyncio.run(read_all(settings))]
        letters = [d for d in letters if (not args.consumer or d["consumer"] == args.consumer) and (not args.code or d["code"] == args.code)]
        letters = letters[-args.limit:]
        if args.json:
            print(json.dumps(letters, indent=2))
        else:
            for d in letters:
                print(f"{d['ref']:>8}  {d['consumer']:<14} {d['code']:<20} {d['from']}  {d['reason']}")
            print(f"{len(letters)} dead letter(s)", file=sys.stderr)
        return 0
    for line in asyncio.run(replay(settings, args.refs)):
        print("replayed", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
