"""The local servers really start, serve and stop (no mocks)."""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import tempfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import asyncpg
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from hub_devstack import stack
from hub_devstack._proc import free_port, pid_alive
from hub_devstack.kafka import KafkaServer
from hub_devstack.postgres import PostgresServer
from hub_devstack.provision import drop_database, provision_service
from hub_devstack.settings import DevstackSettings
from hub_devstack.smtp_sink import SmtpSink

pytestmark = pytest.mark.integration


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A scratch folder directly under the system temp dir (not pytest's 0700 tree: the PostgreSQL
    server runs as another system user and must be able to reach its data directory)."""
    path = Path(tempfile.mkdtemp(prefix="hub-devstack-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _gone(pid: int) -> bool:
    """The process has exited and was reaped (no zombie left behind)."""
    return not psutil.pid_exists(pid)


async def test_kafka_produce_consume_and_stop(scratch: Path) -> None:
    server = KafkaServer(scratch / "kafka", port=free_port(), controller_port=free_port())
    bootstrap = await asyncio.to_thread(server.start, 120)
    pid = server.pid
    assert pid is not None and server.is_running()
    try:
        attached = KafkaServer.attach(scratch / "kafka")
        assert attached is not None and attached.pid == pid and attached.bootstrap_servers == bootstrap

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic("devstack.test", num_partitions=3, replication_factor=1)])
        finally:
            await admin.close()

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            meta = await producer.send_and_wait("devstack.test", b"hello kafka", key=b"org-1")
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            "devstack.test",
            bootstrap_servers=bootstrap,
            group_id="devstack-test",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), timeout=60)
            await consumer.commit()
        finally:
            await consumer.stop()
        assert (record.key, record.value) == (b"org-1", b"hello kafka")
        assert (record.partition, record.offset) == (meta.partition, meta.offset)
    finally:
        await asyncio.to_thread(server.stop)
    assert not server.is_running()
    assert _gone(pid)
    assert not (scratch / "kafka" / "kafka.pid").exists()
    assert KafkaServer.attach(scratch / "kafka") is None


async def test_postgres_service_roles_are_isolated(scratch: Path) -> None:
    server = PostgresServer(scratch / "pg", port=free_port(), fsync=False)
    admin_dsn = await asyncio.to_thread(server.start, 60)
    pid = server.pid
    assert pid is not None and admin_dsn == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    try:
        tasks_dsn = await provision_service(admin_dsn, "synchub", "tasks", "tasks-pw")
        linking_dsn = await provision_service(admin_dsn, "synchub", "linking", "linking-pw")
        # idempotent
        assert await provision_service(admin_dsn, "synchub", "tasks", "tasks-pw") == tasks_dsn
        assert tasks_dsn == f"postgresql://tasks:tasks-pw@127.0.0.1:{server.port}/synchub"

        conn = await asyncpg.connect(tasks_dsn)
        try:
            assert await conn.fetchval("SELECT current_user") == "tasks"
            await conn.execute("CREATE TABLE task (id bigint PRIMARY KEY, title text NOT NULL)")
            await conn.execute("INSERT INTO task VALUES (1, 'ship it')")
            assert await conn.fetchval("SELECT schemaname FROM pg_tables WHERE tablename = 'task'") == "tasks"
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CREATE TABLE linking.stolen (id int)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CREATE TABLE public.shared (id int)")
        finally:
            await conn.close()

        conn = await asyncpg.connect(linking_dsn)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM tasks.task")
        finally:
            await conn.close()

        # a crash (SIGKILL) and a restart keep the data
        await asyncio.to_thread(server.kill)
        assert _gone(pid)
        await asyncio.to_thread(server.start, 60)
        assert server.pid != pid
        pid = server.pid
        assert pid is not None
        attached = PostgresServer.attach(scratch / "pg")
        assert attached is not None and attached.pid == pid and attached.port == server.port
        conn = await asyncpg.connect(tasks_dsn)
        try:
            assert await conn.fetchval("SELECT title FROM task WHERE id = 1") == "ship it"
        finally:
            await conn.close()
        await drop_database(admin_dsn, "synchub")
    finally:
        await asyncio.to_thread(server.stop)
    assert not server.is_running()
    assert _gone(pid)


def test_smtp_sink_files_mail(tmp_path: Path) -> None:
    sink = SmtpSink(tmp_path / "mailbox", port=free_port())
    with sink:
        msg = EmailMessage()
        msg["From"] = "hub@example.test"
        msg["To"] = "ada@example.test"
        msg["Subject"] = "Task assigned: Ship the release"
        msg.set_content("You have a new task.")
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
            smtp.send_message(msg)

        [received] = sink.wait_for(1)
        [path] = sink.files()
        assert path.suffix == ".eml"
        assert b"Subject: Task assigned: Ship the release" in path.read_bytes()
        assert received["Subject"] == "Task assigned: Ship the release"
        assert received["X-Hub-Envelope-To"] == "<ada@example.test>"
        assert "You have a new task." in received.get_content()

        sink.refuse = True  # simulated outage: a transient 4xx
        with smtplib.SMTP(sink.host, sink.port, timeout=10) as smtp:
            with pytest.raises(smtplib.SMTPSenderRefused) as err:
                smtp.send_message(msg)
        assert err.value.smtp_code == 451
        assert len(sink.files()) == 1


def test_infra_up_and_down(scratch: Path) -> None:
    settings = DevstackSettings(
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        pg_port=free_port(),
        pg_fsync=False,
        smtp_port=free_port(),
    )
    state_dir = scratch / "var" / "local"
    pids: dict[str, int] = {}
    try:
        info = stack.start_infra(state_dir, settings)
        assert info["kafka"]["bootstrap_servers"] == f"127.0.0.1:{settings.kafka_port}"
        assert set(info["services"]) == {"identity", "linking", "tasks", "notifications", "sandbox"}
        assert info["services"]["identity"]["dsn"] == (
            f"postgresql://identity:identity@127.0.0.1:{settings.pg_port}/synchub"
        )
        pids = {name: rec["pid"] for name, rec in info["processes"].items()}
        assert set(pids) == {"kafka", "postgres", "smtp"}
        assert all(pid_alive(pid) for pid in pids.values())
        assert stack.read_stack(state_dir) == info

        # a second `up` reuses the running servers
        again = stack.start_infra(state_dir, settings)
        assert {name: rec["pid"] for name, rec in again["processes"].items()} == pids

        with smtplib.SMTP("127.0.0.1", settings.smtp_port, timeout=10) as smtp:
            smtp.sendmail("a@example.test", ["b@example.test"], b"Subject: hi\r\n\r\nhello\r\n")
        assert len(list((state_dir / "mailbox").glob("*.eml"))) == 1
    finally:
        stopped = stack.stop_all(state_dir)
    assert set(stopped) == {"kafka", "postgres", "smtp"}
    assert all(_gone(pid) for pid in pids.values())
    assert stack.status(state_dir) == {}
