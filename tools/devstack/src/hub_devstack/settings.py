"""Environment of the local stack (prefix HUB_LOCAL_), e.g. HUB_LOCAL_KAFKA_PORT=19092."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES: tuple[str, ...] = ("identity", "linking", "tasks", "notifications", "sandbox")
DATABASE = "synchub"


class DevstackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_LOCAL_", extra="ignore")

    kafka_port: int = 9092
    kafka_controller_port: int | None = Field(default=None, description="Default: kafka_port + 1.")
    kafka_heap: str = "256m"
    kafka_brokers: int = Field(
        default=1, ge=1,
        description="1: one node. 3 (`KAFKA_BROKERS=3 make up`): three broker+controller nodes on kafka_port, +2, +4 "
                    "(controllers on the next port each), topics with three replicas and min.insync.replicas=2.",
    )
    kafka_jvm_opts: str = Field(default="", description="Extra JVM flags, space-separated (override the defaults).")
    kafka_security: Literal["SASL_PLAINTEXT", "PLAINTEXT"] = Field(
        default="SASL_PLAINTEXT",
        description="SASL_PLAINTEXT: SCRAM principal per service and connector, ACLs from the topic catalog. "
                    "PLAINTEXT: no authentication (a state folder formatted one way cannot switch; remove it).",
    )
    zoho: Literal["", "fake"] = Field(
        default="", description="fake (`make up ZOHO=fake`): the fake Zoho and both connectors instead of the sandbox.")
    pg_port: int = 5432
    pg_fsync: bool = True
    smtp_port: int = 1025
    database: str = DATABASE
    start_timeout: float = 120.0
