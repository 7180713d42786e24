"""The whole hub in one test: four services + the sandbox CRM/PM + an SMTP sink, on the real broker and DB.

Every service runs its real ASGI app (so its read API is served over real HTTP)
under uvicorn in the test's event loop; `quiesce()` waits until every consumer
group has caught up and every outbox is empty, which is how end-to-end tests
know "the system has finished reacting" without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvicorn

from hub_devstack.harness import build_service
from hub_devstack.pytest_plugin import HubEnv, free_port
from hub_devstack.smtp_sink import SmtpSink

SERVICES = ("identity", "linking", "tasks", "notifications", "sandbox")
LINKING_ADMIN_TOKEN = "e2e-admin-" + secrets.token_urlsafe(32)
OPERATOR_TOKEN = "e2e-operator-" + secrets.token_urlsafe(32)


def _build(name: str, env: HubEnv, extra: dict[str, str]) -> Any:
    if name != "sandbox":
        return build_service(env, name, **extra)
    from hub_sandbox.main import build
    from hub_sandbox.settings import SandboxSettings

    return build(env.settings(SandboxSettings, name, **extra))


@dataclass
class HubStack:
    env: HubEnv
    smtp: SmtpSink
    services: dict[str, Any] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    _servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = field(default_factory=list)
    _lag_clients: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def maildir(self) -> Path:
        return Path(self.smtp.maildir)

    def sandbox(self, org_id: str = "org-1", acting_user_id: str | None = None) -> Any:
        """A client acting in the sandbox's CRM and PM UIs (in-process, wakes the sandbox relay)."""
        from hub_sandbox.client import SandboxClient

        return SandboxClient.of(self.services["sandbox"], org_id=org_id, acting_user_id=acting_user_id)

    def mails(self) -> list[EmailMessage]:
        out = []
        for path in sorted(self.maildir.glob("*.eml")):
            out.append(email.message_from_bytes(path.read_bytes(), policy=email.policy.default))
        return out  # type: ignore[return-value]

    async def wait_for_mails(self, count: int, timeout: float = 60.0) -> list[EmailMessage]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            mails = self.mails()
            if len(mails) >= count:
                return mails
            if loop.time() > deadline:
                raise AssertionError(f"expected {count} mails, got {len(mails)}: {[m['Subject'] for m in mails]}")
            await asyncio.sleep(0.2)

    async def db(self, service: str) -> asyncpg.Connection:
        return await asyncpg.connect(self.env.dsns[service])

    async def lag(self) -> dict[str, int]:
        """Records not yet consumed per consumer group, over the topics each group reads (asked as the
        group's own principal: on a secured broker only it may see its group and topics)."""
        out: dict[str, int] = {}
        for name, service in self.services.items():
            out[name] = await self._lag_of(name, service.group_id, service.subscribed)
        return out

    async def _lag_of(self, principal: str, group: str, subscribed: list[str]) -> int:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        if principal not in self._lag_clients:
            options = self.env.client_options(principal)
            admin = AIOKafkaAdminClient(**options)
            consumer = AIOKafkaConsumer(**options, group_id=None)
            await admin.start()
            await consumer.start()
            self._lag_clients[principal] = (admin, consumer)
        admin, consumer = self._lag_clients[principal]
        committed = await admin.list_consumer_group_offsets(group)
        parts = []
        for topic in subscribed:
            if not consumer.partitions_for_topic(topic):
                await consumer._client.force_metadata_update()  # noqa: SLF001
            parts.extend(TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ())
        ends = await consumer.end_offsets(parts) if parts else {}
        return sum(max(end - (committed[tp].offset if tp in committed else 0), 0) for tp, end in ends.items())

    async def close_lag_clients(self) -> None:
        for admin, consumer in self._lag_clients.values():
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await admin.close()
        self._lag_clients.clear()

    async def outbox_backlog(self) -> dict[str, int]:
        out = {}
        for name in self.services:
            conn = await self.db(name)
            try:
                out[name] = await conn.fetchval("SELECT count(*) FROM outbox")
            finally:
                await conn.close()
        return out

    async def quiesce(self, timeout: float = 60.0, stable_checks: int = 2) -> None:
        """Wait until nothing is in flight: no outbox rows, no consumer lag, twice in a row."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        stable = 0
        while True:
            backlog, lag = await self.outbox_backlog(), await self.lag()
            if not any(backlog.values()) and not any(lag.values()):
                stable += 1
                if stable >= stable_checks:
                    return
            else:
                stable = 0
            if loop.time() > deadline:
                raise AssertionError(f"the hub did not settle in {timeout}s: outbox {backlog}, lag {lag}")
            await asyncio.sleep(0.3)

    async def linking_api(self, path: str, key: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url("linking"), timeout=10) as http:
            return await http.get(path, headers={"Authorization": f"Bearer {key}"})

    async def api(self, service: str, method: str, path: str, *, token: str | None = None,
                  **kwargs: Any) -> httpx.Response:
        """A call to a service's HTTP API over real HTTP, with `Authorization: Bearer <token>` when given."""
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}".strip()  # HTTP allows no trailing space: "" -> "Bearer"
        async with httpx.AsyncClient(base_url=self.url(service), timeout=10) as http:
            return await http.request(method, path, headers=headers, **kwargs)

    async def wait_key_accepted(self, service: str, key: str, probe_path: str, timeout: float = 30.0) -> None:
        """A key minted at linking reaches tasks and notifications as an event: wait until `service` knows it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (await self.api(service, "GET", probe_path, token=key)).status_code == 401:
            if loop.time() > deadline:
                raise AssertionError(f"{service} never accepted the new service key")
            await asyncio.sleep(0.2)

    async def new_service_key(self, org_id: str = "org-1") -> str:
        async with httpx.AsyncClient(base_url=self.url("linking"), timeout=10) as http:
            resp = await http.post(f"/api/v1/orgs/{org_id}/service-key", headers={"Authorization": f"Bearer {LINKING_ADMIN_TOKEN}"})
            resp.raise_for_status()
            body = resp.json()
            return body.get("key") or body["service_key"]


@contextlib.asynccontextmanager
async def hub_stack(env: HubEnv, tmp_path: Path, services: tuple[str, ...] = SERVICES) -> AsyncIterator[HubStack]:
    """`services`: leave out "sandbox" when connectors to a (fake) Zoho stand in for it."""
    smtp = SmtpSink(tmp_path / "mailbox", port=free_port())
    smtp.start()
    stack = HubStack(env=env, smtp=smtp)
    extra = {
        "HUB_SMTP__HOST": "127.0.0.1",
        "HUB_SMTP__PORT": str(smtp.port),
        "HUB_LINKING_ADMIN_TOKEN": LINKING_ADMIN_TOKEN,
        "HUB_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "HUB_OBS__LOG_LEVEL": "warning",
    }
    try:
        for name in services:
            port = free_port()
            service = _build(name, env, {**extra, "HUB_HTTP_PORT": str(port)})
            server = uvicorn.Server(uvicorn.Config(service.asgi(), host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
            task = asyncio.create_task(server.serve())
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
            stack.services[name] = service
            stack.ports[name] = port
            stack._servers.append((server, task))
        yield stack
    finally:
        await stack.close_lag_clients()
        for server, task in reversed(stack._servers):
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        smtp.stop()
