"""Settings of the task-mirroring service (env prefix HUB_, see hub_platform.settings)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field

from hub_platform.settings import ServiceSettings
from hub_tasks import domain
from hub_tasks.domain import Budget


class TaskLimitsSettings(BaseModel):
    """The bounds of task mirroring: the per-task command budget (a task that needs more commands than this is
    parked, see domain.spend) and the fan-out of one PM task (see domain.too_many_records)."""

    command_budget: int = Field(
        30, ge=1, description="Commands one task may cause within the window before it is parked (HUB_TASKS__COMMAND_BUDGET).")
    budget_window_seconds: float = Field(
        600, gt=0, description="Length of the budget's window in seconds (HUB_TASKS__BUDGET_WINDOW_SECONDS).")

    max_mirrored_records: int = Field(
        domain.MAX_MIRRORED_RECORDS, ge=1,
        description="Linked records one PM task is mirrored to at most; past it the task is refused "
                    "(HUB_TASKS__MAX_MIRRORED_RECORDS).")

    def budget(self) -> Budget:
        return Budget(self.command_budget, timedelta(seconds=self.budget_window_seconds))


class TasksSettings(ServiceSettings):
    service_name: str = "tasks"
    http_port: int = 8083
    tasks: TaskLimitsSettings = TaskLimitsSettings()
