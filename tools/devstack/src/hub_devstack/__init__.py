"""Real local servers for development and tests: Kafka (KRaft), PostgreSQL, an SMTP sink.

    from hub_devstack import KafkaServer, PostgresServer, SmtpSink, provision_service, start_infra, stop_all

Names are imported lazily, so ``python -m hub_devstack.smtp_sink`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "KafkaServer": "kafka",
    "ensure_jars": "kafka",
    "PostgresServer": "postgres",
    "create_database": "provision",
    "drop_database": "provision",
    "provision_service": "provision",
    "SmtpSink": "smtp_sink",
    "start_infra": "stack",
    "stop_all": "stack",
    "read_stack": "stack",
    "record_process": "stack",
    "DevstackSettings": "settings",
    "ServerStartError": "_proc",
    "free_port": "_proc",
}

__all__ = [
    "DevstackSettings",
    "KafkaServer",
    "PostgresServer",
    "ServerStartError",
    "SmtpSink",
    "create_database",
    "drop_database",
    "ensure_jars",
    "free_port",
    "provision_service",
    "read_stack",
    "record_process",
    "start_infra",
    "stop_all",
]

if TYPE_CHECKING:
    from ._proc import ServerStartError, free_port
    from .kafka import KafkaServer, ensure_jars
    from .postgres import PostgresServer
    from .provision import create_database, drop_database, provision_service
    from .settings import DevstackSettings
    from .smtp_sink import SmtpSink
    from .stack import read_stack, record_process, start_infra, stop_all


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hub_devstack' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
