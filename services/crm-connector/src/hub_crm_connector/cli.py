"""`hub-connector backfill --org ORG --since DATE`: bring an org's existing records into the hub.

Enabling the integration on an org that already has records would otherwise leave them out until each is
edited again (field users call missing backfill the top pain of sync tools). Pages every CRM module (and,
with `--side pm|both`, every Projects portal of the org) into crm.ingest / pm.ingest through the
connectors' outboxes, with a progress line per module and a cursor saved after each page: run the same
command again after an interruption and it goes on where it stopped (`--restart` starts over).

It needs the connectors' databases (same HUB_* settings as the connectors) and publishes with its own outbox
relay, or lets the running connector's relay publish; it returns when its outbox is empty.

Each connector has its own database role and Kafka principal, so each side reads its own settings:
`--crm-env FILE` / `--pm-env FILE` name dotenv files of that connector's HUB_* variables (its HUB_DB__URL,
HUB_KAFKA__SASL_*, HUB_ZOHO_ORGS ...), laid over the process environment while that side runs. One side
may take the process environment alone; `--side both` needs both files, so the PM side never runs with
the CRM connector's credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import click
from dotenv import dotenv_values

from hub_platform import db
from hub_platform.outbox import OutboxRelay
from hub_platform.settings import ServiceSettings


class Progress:
    """A progress line per module: a bar growing a block per page and the running count (stderr)."""

    def __init__(self, side: str) -> None:
        self.side = side
        self.current: str | None = None
        self.counts: dict[str, int] = {}

    def __call__(self, module: str, page: int, records: int) -> None:
        if self.current not in (None, module):
            click.echo("", err=True)
        self.current = module
        self.counts[module] = self.counts.get(module, 0) + records
        click.echo(f"\r{self.side} {module:<22} [{'#' * min(page, 40):<40}] {self.counts[module]:>7} records, page {page}",
                   nl=False, err=True)

    def close(self) -> None:
        if self.current is not None:
            click.echo("", err=True)


async def _attached(settings: ServiceSettings, connector: Any) -> tuple[Any, OutboxRelay]:
    dsn = settings.db.url.get_secret_value()
    await db.migrate_async(dsn, settings.schema, connector.service_migrations)
    pool = await db.create_pool(dsn, settings.schema)
    relay = OutboxRelay(dsn, settings.schema, settings.kafka, f"{settings.service_name}-backfill", poll_seconds=0.2)
    await relay.start()
    connector.service = types.SimpleNamespace(pool=pool, relay=relay)
    return pool, relay


async def _drain(pool: Any, relay: OutboxRelay) -> None:
    while await pool.fetchval("SELECT count(*) FROM outbox"):
        relay.wake()
        await asyncio.sleep(0.2)
    await relay.stop()
    await pool.close()


@contextlib.contextmanager
def side_environment(env_file: str | None) -> Iterator[None]:
    """The process environment with the side's dotenv file laid over it (restored after)."""
    values = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file else {}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def backfill(org_id: str, since: datetime | None, side: str, restart: bool, *, crm_env: str | None = None,
                   pm_env: str | None = None) -> dict[str, int]:
    out: dict[str, int] = {}
    if side == "both" and not (crm_env and pm_env):
        raise click.UsageError("--side both needs --crm-env and --pm-env: each connector has its own database role and "
                               "Kafka principal (a file of its HUB_* variables each)")
    if side in ("crm", "both"):
        from hub_crm_connector.ingress import Connector
        from hub_crm_connector.main import MIGRATIONS
        from hub_crm_connector.settings import CrmConnectorSettings

        with side_environment(crm_env):
            s = CrmConnectorSettings()
            crm = Connector(s)
        crm.service_migrations = MIGRATIONS  # type: ignore[attr-defined]
        if org_id not in crm.orgs:
            raise click.ClickException(f"no Zoho credentials for org {org_id} (HUB_ZOHO_ORGS or HUB_ZOHO_ORGS_FILE)")
        pool, relay = await _attached(s, crm)
        try:
            crm_progress = Progress("crm")
            out["crm"] = await crm.backfill(org_id, since, restart=restart, progress=crm_progress)
            crm_progress.close()
        finally:
            await _drain(pool, relay)
            await crm.aclose()
    if side in ("pm", "both"):
        from hub_pm_connector.ingress import Connector as PmConnector
        from hub_pm_connector.main import MIGRATIONS as PM_MIGRATIONS
        from hub_pm_connector.settings import PmConnectorSettings

        with side_environment(pm_env):
            ps = PmConnectorSettings()
            pm = PmConnector(ps)
        pm.service_migrations = PM_MIGRATIONS  # type: ignore[attr-defined]
        if org_id not in pm.orgs:
            raise click.ClickException(f"no Zoho credentials for org {org_id} (HUB_ZOHO_ORGS or HUB_ZOHO_ORGS_FILE)")
        pool, relay = await _attached(ps, pm)
        try:
            if restart:
                from hub_zoho.state import reset_cursors

                await reset_cursors(pool, org_id, "backfill")
            pm_progress = Progress("pm")
            pages: dict[str, int] = {}

            def on_page(key: str, n: int) -> None:
                pages[key] = pages.get(key, 0) + 1
                pm_progress(key, pages[key], n)

            out["pm"] = await pm.poll(org_id, purpose="backfill", since=since, progress=on_page)
            pm_progress.close()
        finally:
            await _drain(pool, relay)
            await pm.aclose()
    return out


@click.group()
def cli_group() -> None:
    """The connectors' operator commands."""


@cli_group.command("backfill")
@click.option("--org", "org_id", required=True, help="The hub's org id (as in HUB_ZOHO_ORGS).")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="Only records modified after this (default: all).")
@click.option("--side", type=click.Choice(["crm", "pm", "both"]), default="both", show_default=True)
@click.option("--restart", is_flag=True, help="Forget the saved cursor and start over.")
@click.option("--crm-env", type=click.Path(exists=True, dir_okay=False), default=None,
              help="dotenv file of the CRM connector's HUB_* settings (its database role, Kafka principal, orgs).")
@click.option("--pm-env", type=click.Path(exists=True, dir_okay=False), default=None,
              help="dotenv file of the PM connector's HUB_* settings.")
def backfill_command(org_id: str, since: datetime | None, side: str, restart: bool, crm_env: str | None, pm_env: str | None) -> None:
    """Page every module of ORG into the ingest topics (resumable)."""
    when = since.replace(tzinfo=UTC) if since else None
    counts = asyncio.run(backfill(org_id, when, side, restart, crm_env=crm_env, pm_env=pm_env))
    click.echo(f"backfill of {org_id} done: " + ", ".join(f"{k} {v} records published" for k, v in counts.items()), err=True)


def cli(args: list[str] | None = None) -> None:
    cli_group.main(args=args, prog_name="hub-connector")


def main() -> None:
    cli()

