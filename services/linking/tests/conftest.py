"""Fixtures of the linking tests; the harness itself lives in hub_devstack.harness.linking (importable under importlib mode)."""

from hub_devstack.harness.linking import linking  # noqa: F401
