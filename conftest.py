"""Repository-wide pytest set-up: the real-infrastructure fixtures live in hub_devstack."""

pytest_plugins = ["hub_devstack.pytest_plugin", "hub_devstack.security_report"]
