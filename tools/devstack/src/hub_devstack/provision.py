"""Databases, service roles and schemas on a PostgreSQL server (idempotent).

Each service gets a LOGIN role named after it, a schema of the same name owned by that role and
its ``search_path`` set to that schema; nobody may create objects in ``public``. A service can
therefore create and use tables only in its own schema and cannot see into another's.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg


def quote_ident(name: str) -> str:
    """SQL identifier quoting ("a""b")."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def with_database(dsn: str, database: str, user: str | None = None, password: str | None = None) -> str:
    """The same server DSN, pointed at another database (and optionally another user)."""
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if user is not None:
        hostport = netloc.rsplit("@", 1)[-1]
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        netloc = f"{auth}@{hostport}"
    return urlunsplit((parts.scheme, netloc, "/" + quote(database, safe=""), parts.query, parts.fragment))


async def create_database(admin_dsn: str, name: str) -> str:
    """Create database `name` if it does not exist; returns its admin DSN."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
            except asyncpg.DuplicateDatabaseError:
                pass  # created concurrently
    finally:
        await conn.close()
    return with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database `name` if it exists, disconnecting its clients."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    finally:
        await conn.close()


async def provision_service(admin_dsn: str, database: str, service: str, password: str) -> str:
    """Make sure `database` exists and holds a schema `service` owned by the LOGIN role `service`
    (with `password`, search_path = that schema). Returns the service's DSN
    ``postgresql://<service>:<password>@<host>:<port>/<database>``."""
    db_admin_dsn = await create_database(admin_dsn, database)
    role, schema = quote_ident(service), quote_ident(service)

    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", service)
        if not exists:
            try:
                await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD {quote_literal(password)}")
            except asyncpg.DuplicateObjectError:
                pass  # created concurrently
        await conn.execute(
            f"ALTER ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {quote_literal(password)}"
        )
        await conn.execute(f"ALTER ROLE {role} SET search_path = {schema}")
    finally:
        await conn.close()

    conn = await asyncpg.connect(db_admin_dsn)
    try:
        async with conn.transaction():
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {role}")
            await conn.execute(f"ALTER SCHEMA {schema} OWNER TO {role}")
            await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            await conn.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {quote_ident(database)} TO {role}")
    finally:
        await conn.close()
    return with_database(admin_dsn, database, user=service, password=password)
