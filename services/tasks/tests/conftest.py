"""Fixtures of the tasks service's tests: the service running on the test's topics and database, and the harness."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tasks_harness import World  # noqa: E402

from hub_devstack.pytest_plugin import HubEnv, KafkaProbe, running  # noqa: E402


@pytest.fixture
async def service(hub_env: HubEnv) -> AsyncIterator[object]:
    from hub_tasks.main import build
    from hub_tasks.settings import TasksSettings

    async with running(build(hub_env.settings(TasksSettings, "tasks"))) as svc:
        yield svc


@pytest.fixture
async def world(hub_env: HubEnv, kafka_probe: KafkaProbe, service: object) -> World:
    w = World(hub_env, kafka_probe)
    await w.start()
    return w
