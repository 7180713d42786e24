"""Settings of the task-mirroring service (env prefix HUB_, see hub_platform.settings)."""

from __future__ import annotations

from hub_platform.settings import ServiceSettings


class TasksSettings(ServiceSettings):
    service_name: str = "tasks"
    http_port: int = 8083
