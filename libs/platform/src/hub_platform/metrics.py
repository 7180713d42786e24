"""Prometheus metrics every service exposes on /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

PROCESSED = Counter("hub_events_processed_total", "Events handled (state committed)", ["consumer", "event_type"], registry=REGISTRY)
SKIPPED = Counter("hub_events_duplicate_total", "Redelivered events absorbed by the inbox", ["consumer"], registry=REGISTRY)
IGNORED = Counter("hub_events_ignored_total", "Valid events this consumer has no handler for", ["consumer"], registry=REGISTRY)
FAILED = Counter("hub_events_failed_total", "Handler attempts that raised", ["consumer", "event_type"], registry=REGISTRY)
DEAD_LETTERED = Counter("hub_events_dead_lettered_total", "Events sent to the dead-letter topic", ["consumer", "code"], registry=REGISTRY)
LATENCY = Histogram(
    "hub_handler_seconds", "Time to handle one event inside its batch transaction", ["consumer"], registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BATCH_SECONDS = Histogram("hub_batch_seconds", "Time to handle and commit one batch", ["consumer"], registry=REGISTRY)
OUTBOX_PUBLISHED = Counter("hub_outbox_published_total", "Outbox rows published by the relay", ["service"], registry=REGISTRY)
OUTBOX_BACKLOG = Gauge("hub_outbox_backlog", "Outbox rows waiting at the relay's last poll", ["service"], registry=REGISTRY)
INFRA_RETRIES = Counter("hub_infrastructure_retries_total", "Batch retries after a database or broker outage", ["consumer"], registry=REGISTRY)
CONSUMER_LAG = Gauge("hub_consumer_lag", "Records behind the partition's high watermark after the last batch", ["consumer", "topic", "partition"], registry=REGISTRY)
