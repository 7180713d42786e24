"""One harness for a service under test on the real broker and database.

`ServiceHarness` is what every service's own integration tests share: send events as an
upstream (or another service) would, wait until the service handled all of them (its inbox
has a row per event sent), read what it published on its output topics, and look at its
tables. `service_harness(...)` starts the service in the test's event loop (and serves its
HTTP API with uvicorn when asked) around a harness.

Per-service subclasses add only the story's vocabulary (`linking.Harness`: users,
portals, projects, deals...; `tasks.World`: tasks on both sides and the upstreams applying
the hub's commands). The whole hub with every service at once is `hub_devstack.e2e`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import asyncpg
import httpx
import uvicorn

from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, running
from hub_schema import make_event, parse_event
from hub_schema.registry import Payload

ORG = "org-1"
H = TypeVar("H", bound="ServiceHarness")


class ServiceHarness:
    """A service's inputs and outputs as a test sees them (only topics, HTTP and its database)."""

    def __init__(self, env: HubEnv, probe: KafkaProbe, service_name: str, reader: Any,
                 service: Any = None, http: httpx.AsyncClient | None = None) -> None:
        self.env = env
        self.probe = probe
        self.service_name = service_name
        self.reader = reader
        self.service = service
        self.http = http
        self.sent = 0
        self.records: list[Any] = []
        self._events: list[Any] = []

    # --- sending -----------------------------------------------------------------------------------

    async def send(self, payload: Payload, *, org: str = ORG, key: str = "k", origin: str = "hub") -> Any:
        """Produce one event to its catalog topic, as its rightful writer; counted for `settled`."""
        env = make_event(payload, org_id=org, entity_key=key, producer="test", origin=origin)  # type: ignore[arg-type]
        return await self.send_envelope(env)

    async def send_envelope(self, envelope: Any) -> Any:
        await self.probe.send(envelope)
        self.sent += 1
        return envelope

    async def settled(self, timeout: float = 30.0) -> None:
        """Wait until the service handled every event sent so far (its inbox has a row per event)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            n = await self.value("SELECT count(*) FROM inbox")
            if n >= self.sent:
                return
            if loop.time() > deadline:
                raise AssertionError(f"{self.service_name} handled {n} of {self.sent} events")
            await asyncio.sleep(0.1)

    # --- what the service published -------------------------------------------------------------

    def events(self, event_type: str | None = None) -> list[Any]:
        """Every event read so far from the output topics (parsed once), optionally of one type."""
        if len(self._events) < len(self.records):
            self._events.extend(parse_event(r.value) for r in self.records[len(self._events):])
        return [e for e in self._events if event_type is None or e.event_type == event_type]

    @property
    def out(self) -> list[Any]:
        return self.events()

    def of(self, event_type: str, evs: list[Any] | None = None) -> list[Any]:
        return [e for e in (evs if evs is not None else self.events()) if e.event_type == event_type]

    def payloads(self, event_type: str, **match: Any) -> list[Any]:
        """Payloads of one event type whose fields equal `match`."""
        return [e.payload for e in self.events(event_type) if all(getattr(e.payload, k) == v for k, v in match.items())]

    async def wait(self: H, cond: Callable[[H], bool], timeout: float = 30.0, settle: float = 0.0) -> None:
        """Read the output topics until `cond(self)` holds, then `settle` more seconds to catch extras.

        It reads before it first asks `cond` (what was published by now is taken in even when the condition
        already held), so a test waiting for a second event of a kind it has seen once sees the newest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        settle_until: float | None = None
        while True:
            batch = await self.reader.getmany(timeout_ms=200)
            for recs in batch.values():
                self.records.extend(recs)
            if settle_until is None and cond(self):
                if settle <= 0:
                    return
                settle_until = loop.time() + settle
            if settle_until is not None and loop.time() >= settle_until:
                return
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout}s; saw {[e.event_type for e in self.events()]}")

    async def wait_for(self, pred: Callable[[list[Any]], bool], timeout: float = 30.0, settle: float = 0.0) -> list[Any]:
        """`wait` with a predicate over the events; returns them."""
        await self.wait(lambda h: pred(h.events()), timeout=timeout, settle=settle)
        return self.events()

    async def collect(self, until: Callable[[list[Any]], bool] | None = None, settle: float = 1.0,
                      timeout: float = 30.0) -> list[Any]:
        """After the service handled everything sent: the output so far, once `until(events)` holds."""
        await self.settled()
        return await self.wait_for(until or (lambda evs: True), timeout=timeout, settle=settle)

    async def quiet(self, seconds: float = 1.5) -> list[Any]:
        """Everything published so far, after letting the relay drain."""
        return await self.collect(settle=seconds)

    async def wait_count(self, event_type: str, count: int = 1, settle: float = 1.0) -> list[Any]:
        """At least `count` events of a type (then `settle` seconds for extras); returns those events."""
        await self.collect(lambda evs: sum(e.event_type == event_type for e in evs) >= count, settle=settle)
        return self.of(event_type)

    async def one(self, event_type: str, pred: Callable[[Any], bool] = lambda e: True, timeout: float = 30.0) -> Any:
        evs = await self.wait_for(lambda es: any(e.event_type == event_type and pred(e) for e in es), timeout=timeout)
        return next(e for e in evs if e.event_type == event_type and pred(e))

    # --- the service's database ------------------------------------------------------------------

    async def db(self) -> asyncpg.Connection:
        """A connection as the service's own role (its schema first on the search path)."""
        return await asyncpg.connect(self.env.dsns[self.service_name])

    async def query(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        conn = await self.db()
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    async def value(self, sql: str, *args: Any) -> Any:
        conn = await self.db()
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def wait_db(self, sql: str, *args: Any, timeout: float = 30.0) -> None:
        """Wait until `sql` returns a true first value (a row the service wrote)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.value(sql, *args):
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {sql} {args}")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def service_harness(env: HubEnv, probe: KafkaProbe, service_name: str, *, outputs: tuple[str, ...],
                          cls: type[H] = ServiceHarness, serve_http: bool = False, start: bool = True,
                          **settings: str) -> AsyncIterator[H]:
    """Build `service_name` from this test's settings (`settings` are extra HUB_* variables), run it in
    this event loop, optionally serve its HTTP API on the port its settings name, and yield a harness
    reading `outputs` (logical topics) from the beginning. `start=False` yields the harness with the
    built service not yet started (a test that starts and stops it itself)."""
    service = build_service(env, service_name, **settings)
    reader = await probe.reader(*outputs)
    if not start:
        yield cls(env, probe, service_name, reader, service)
        return
    async with running(service):
        if not serve_http:
            yield cls(env, probe, service_name, reader, service)
            return
        port = service.settings.http_port
        server = uvicorn.Server(uvicorn.Config(service.asgi(), host="127.0.0.1", port=port, lifespan="off",
                                               log_level="warning", access_log=False))
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                yield cls(env, probe, service_name, reader, service, http)
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)


def build_service(env: HubEnv, service_name: str, **settings: str) -> Any:
    """The service object `python -m hub_<name>` would run, with this test's settings."""
    if service_name == "identity":
        from hub_identity.main import build
        from hub_identity.settings import IdentitySettings as S
    elif service_name == "linking":
        from hub_linking.main import build  # type: ignore[no-redef]
        from hub_linking.settings import LinkingSettings as S  # type: ignore[no-redef]
    elif service_name == "tasks":
        from hub_tasks.main import build  # type: ignore[no-redef]
        from hub_tasks.settings import TasksSettings as S  # type: ignore[no-redef]
    elif service_name == "notifications":
        from hub_notifications.main import build  # type: ignore[no-redef]
        from hub_notifications.settings import NotificationsSettings as S  # type: ignore[no-redef]
    else:
        raise ValueError(f"no service called {service_name!r}")
    return build(env.settings(S, service_name, **settings))
