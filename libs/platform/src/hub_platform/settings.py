"""Settings every service reads from the environment (pydantic-settings), with local defaults.

Variables are prefixed HUB_; nested groups use a double underscore, e.g.
HUB_KAFKA__BOOTSTRAP_SERVERS, HUB_DB__URL, HUB_SMTP__HOST.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = Field("", description="Prepended to every catalog topic name (test runs, shared clusters).")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    batch_max_records: int = Field(500, ge=1, description="Records handled in one database transaction at most.")
    commit_in_background: bool = Field(
        True,
        description=(
            "Commit a batch's offsets while the next batch is fetched and handled (awaited before the next commit, a "
            "rebalance or a stop) instead of before the next poll: ≈ 9 ms less per batch cycle on a local broker."),
    )
    batch_timeout_ms: int = Field(
        100, ge=1,
        description=(
            "How long one poll waits for records when there are none (a poll returns as soon as records arrive). "
            "It bounds how often an idle consumer wakes and how long a graceful stop waits for the loop; it adds "
            "no latency (hub_platform.service.poll_without_idle_sleep)."),
    )
    batch_topup_ms: int = Field(
        5, ge=0,
        description=(
            "A poll that found records already fetched (the consumer was busy with the previous batch) asks the broker "
            "once more, waiting up to this long, before the batch is handled: aiokafka fetches a partition again only "
            "once its buffered records are taken, so what arrived during the previous batch would otherwise wait for "
            "the next one too (hub_platform.service.poll_without_idle_sleep). 0: off."),
    )
    batch_concurrency: int = Field(
        1, ge=1,
        description=(
            "A fetched batch is split by partition into up to this many groups, each handled in its own database "
            "transaction at the same time (one partition is never split, so per-key order holds; offsets are "
            "committed once every group committed). For a database far away (each statement a network round trip): "
            "the groups overlap their waits. Measured on the 2-core bench machine, where the service's own CPU is the "
            "limit, 2 gave no gain (tasks 768/s against 810/s with 1; bench/RESULTS.md), hence 1."
        ),
    )
    batch_max_outbox_rows: int = Field(
        5000, ge=1,
        description=(
            "A batch whose events have emitted this many events is committed there and the rest of it handled in a "
            "new transaction (the inbox keeps every event once). With `batch_max_seconds` it bounds one transaction's "
            "work, so a replica never still holds a batch long after the group moved its partitions."
        ),
    )
    batch_max_seconds: float = Field(
        5.0, gt=0,
        description="A batch that has been handled this long is committed there and the rest handled in a new transaction.",
    )
    fetch_max_wait_ms: int = Field(
        50, ge=1,
        description=(
            "How long the broker may hold a fetch with no data. aiokafka keeps one fetch in flight per broker and "
            "leaves out partitions whose records are still buffered, so a long wait on the quiet topics delays the "
            "busy ones by up to this much (measured: 500 ms, Kafka's default, gave p99 1.1 s at half load)."
        ),
    )
    group_instance_id: str | None = Field(
        None,
        description=(
            "Static group membership (KIP-345): a name stable across restarts of this one replica (a StatefulSet pod "
            "name, `tasks-2` locally). A restart within the session timeout then keeps its partitions instead of "
            "moving every partition; a static member does not leave the group when it stops, so its partitions wait "
            "for the session timeout when it is removed for good. Unset: a stopped replica leaves the group at once."
        ),
    )
    session_timeout_ms: int = Field(
        10000, ge=1000,
        description=(
            "Without a heartbeat for this long a member (a killed replica) is dropped and its partitions move. "
            "Replicas heartbeat every second (a tenth of it if shorter), so one joining or leaving is noticed within that."
        ),
    )
    commit_timeout_seconds: float = Field(
        60.0, gt=0,
        description=(
            "An offset commit that has not returned after this long means the consumer's group client is wedged "
            "(seen once in the fault suite after a broker kill: no heartbeat, no commit, no rebalance for 12 minutes "
            "while the process looked ready). The process logs `consumer wedged` and exits with code 75, so its "
            "supervisor restarts it; the inbox absorbs the batch it replays."
        ),
    )
    create_topics: bool = Field(True, description="Create missing catalog topics at start-up (turn off where ops own topics).")
    replication_factor: int | None = Field(
        None, ge=1, description="For topics the service creates; unset: the cluster's size, at most 3.")

    def group_id(self, service: str) -> str:
        """The service's consumer group: its name under the topic prefix, like its topics. Two deployments or test
        runs sharing a broker with their own prefixes then never share a group (one joining would rebalance the
        other's replicas, and a member left behind would hold up the other's joins)."""
        return f"{self.topic_prefix}{service}"

    def client_options(self) -> dict[str, object]:
        """Keyword arguments for aiokafka clients (security included)."""
        import ssl

        opts: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            ctx = ssl.create_default_context(cafile=self.ssl_cafile)
            if self.ssl_certfile:
                ctx.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
            opts["ssl_context"] = ctx
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        return opts


class DatabaseSettings(BaseModel):
    url: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/synchub"),
        description="DSN of the service's own role; its tables live in the schema named after the service.",
    )
    schema_name: str | None = Field(None, description="Defaults to the service name.")
    pool_min: int = 1
    pool_max: int = 5
    statement_timeout_ms: int = Field(
        30_000, ge=0,
        description="Longest a statement of the service may run (PostgreSQL statement_timeout; 0: no limit). A message "
                    "whose statement times out on every attempt is dead-lettered (code statement_timeout).",
    )


class RetentionSettings(BaseModel):
    """How long rows that record what happened (and hold personal data) are kept; 0 keeps them for ever."""

    interval_seconds: float = Field(3600, gt=0, description="How often each service prunes its tables.")
    batch: int = Field(5000, ge=1, description="Rows deleted per statement.")
    inbox_days: float = Field(30, ge=0, description="Inbox (de-duplication) rows; keep longer than topic retention.")
    dead_letter_log_days: float = Field(30, ge=0, description="The dead-letter log (the records stay on the topic).")
    deliveries_days: float = Field(90, ge=0, description="notifications: sent, failed and suppressed deliveries "
                                                        "(rendered mails and .xlsx attachments included).")
    task_decisions_days: float = Field(180, ge=0, description="tasks: the history of mirroring decisions.")


class ObservabilitySettings(BaseModel):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    otel_exporter: Literal["none", "console", "otlp"] = "none"
    otel_endpoint: str = "http://127.0.0.1:4318/v1/traces"


class ServiceSettings(BaseSettings):
    """Common settings; each service subclasses this and adds its own fields."""

    model_config = SettingsConfigDict(env_prefix="HUB_", env_nested_delimiter="__", extra="ignore")

    service_name: str = "hub"
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    http_max_body_bytes: int = Field(64 * 1024, ge=1024, description="Larger request bodies are refused (413).")
    kafka: KafkaSettings = KafkaSettings()
    db: DatabaseSettings = DatabaseSettings()
    obs: ObservabilitySettings = ObservabilitySettings()
    retention: RetentionSettings = RetentionSettings()
    transient_retry_attempts: int = Field(5, ge=1, description="Attempts for an event whose handler fails unexpectedly.")
    relay_batch: int = Field(500, ge=1)
    relay_poll_seconds: float = Field(
        1.0, gt=0,
        description="Outbox poll of the relay when nothing woke it. Every outbox write notifies the relay on commit "
                    "(pg_notify, whichever replica committed), so the poll is only the safety net (a notification "
                    "missed while the relay reconnected); it bounds the worst-case publish delay.")
    shutdown_grace_seconds: float = 15.0

    @property
    def schema(self) -> str:
        return self.db.schema_name or self.service_name
