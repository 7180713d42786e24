"""Fixtures of the linking tests; the harness itself lives in hub_linking.testing (importable under importlib mode)."""

from hub_linking.testing import linking  # noqa: F401
