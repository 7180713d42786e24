"""Retention: rows that hold what happened (and so personal data) are deleted after a configurable age.

Every service runs the job (`HubService` starts it): the platform's tables (inbox, dead-letter log) plus the
rules the service adds for its own (notifications: the delivery log with the rendered mails and attachments;
tasks: the decision history). Ages are settings (`HUB_RETENTION__*_DAYS`, 0 keeps rows for ever), the clock is
injectable so tests can move time instead of waiting. Deletes go in bounded batches so a large backlog never
holds long locks; replicas may run the job at the same time (a row is deleted once, the others find nothing).

The inbox is the de-duplication record: keep it longer than the topics keep their records (Kafka's default is
7 days), or a record replayed from the broker after its inbox row was pruned would be handled again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import asyncpg

from hub_platform.logs import get_logger
from hub_platform.settings import RetentionSettings

log = get_logger(__name__)

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class RetentionRule:
    """Delete rows of `table` whose `column` (a timestamptz) is older than the age in setting `age_setting`,
    among those matching `where` (SQL, e.g. only deliveries in a final state)."""

    table: str
    column: str
    age_setting: str
    where: str = "true"


PLATFORM_RULES: tuple[RetentionRule, ...] = (
    RetentionRule("inbox", "processed_at", "inbox_days"),
    RetentionRule("dead_letter_log", "dead_lettered_at", "dead_letter_log_days"),
)


class RetentionJob:
    """Prunes the service's tables by `rules` every `settings.interval_seconds`."""

    def __init__(self, pool: asyncpg.Pool, rules: Sequence[RetentionRule], settings: RetentionSettings,
                 clock: Clock = system_clock) -> None:
        for rule in rules:
            if not hasattr(settings, rule.age_setting):
                raise ValueError(f"retention of {rule.table}: no setting {rule.age_setting!r}")
        self.pool = pool
        self.rules = tuple(rules)
        self.settings = settings
        self.clock = clock

    async def run_once(self) -> dict[str, int]:
        """One pass over every rule; returns the rows deleted per table."""
        now = self.clock()
        deleted: dict[str, int] = {}
        for rule in self.rules:
            days = getattr(self.settings, rule.age_setting)
            if not days:
                continue
            cutoff = now - timedelta(days=days)
            total = 0
            while True:
                async with self.pool.acquire() as conn:
                    n = int((await conn.execute(
                        f"DELETE FROM {rule.table} WHERE ctid = ANY(ARRAY("  # noqa: S608 (names from code, not input)
                        f"SELECT ctid FROM {rule.table} WHERE {rule.column} < $1 AND ({rule.where}) LIMIT $2))",
                        cutoff, self.settings.batch,
                    )).split()[-1])
                total += n
                if n < self.settings.batch:
                    break
            deleted[rule.table] = total
            if total:
                log.info("retention pruned rows", table=rule.table, rows=total, older_than_days=days)
        return deleted

    async def run(self) -> None:
        """Background loop: a failed pass (database away) is logged and tried again at the next interval."""
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("retention pass failed", error=repr(exc))
            await asyncio.sleep(self.settings.interval_seconds)
