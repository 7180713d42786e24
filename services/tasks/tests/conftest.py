"""Fixtures of the tasks tests; the harness itself lives in hub_devstack.harness.tasks (importable under importlib mode)."""

from hub_devstack.harness.tasks import service, tasks_settings, world  # noqa: F401
