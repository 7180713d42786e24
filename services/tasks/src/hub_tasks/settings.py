"""Settings of the task-mirroring service (env prefix HUB_, see hub_platform.settings)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field

from hub_platform.settings import ServiceSettings
from hub_tasks.domain import Budget


class CommandBudgetSettings(BaseModel):
    """The per-task command budget: a task that needs more commands than this is parked (see domain.spend)."""

    command_budget: int = Field(
        30, ge=1, description="Commands one task may cause within the window before it is parked (HUB_TASKS__COMMAND_BUDGET).")
    budget_window_seconds: float = Field(
        600, gt=0, description="Length of the budget's window in seconds (HUB_TASKS__BUDGET_WINDOW_SECONDS).")

    def budget(self) -> Budget:
        return Budget(self.command_budget, timedelta(seconds=self.budget_window_seconds))


class TasksSettings(ServiceSettings):
    service_name: str = "tasks"
    http_port: int = 8083
    tasks: CommandBudgetSettings = CommandBudgetSettings()
