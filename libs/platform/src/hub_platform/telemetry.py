"""OpenTelemetry tracing; the context travels in Kafka headers (W3C traceparent).

The exporter is chosen by HUB_OBS__OTEL_EXPORTER: `otlp` (HTTP), `console`, or `none`
(spans are still created so trace ids reach logs and outgoing headers).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

_configured = False


def configure_tracing(service: str, exporter: str, endpoint: str) -> None:
    global _configured
    if _configured:
        return
    _configured = True
    provider = TracerProvider(resource=Resource.create({"service.name": f"hub-{service}"}))
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)


@functools.cache
def tracer() -> trace.Tracer:
    """The platform's tracer, made once: `trace.get_tracer` on every event was ~8% of the echo service's CPU (it
    builds an instrumentation scope and goes through a deprecation wrapper each time). Made before
    `configure_tracing`, it is a proxy that follows the provider set later."""
    return trace.get_tracer("hub_platform")


def context_from_headers(headers: Iterable[tuple[str, bytes]] | None) -> otel_context.Context:
    carrier = {k: v.decode("latin-1") for k, v in (headers or ()) if k in ("traceparent", "tracestate")}
    return propagate.extract(carrier)


def current_trace_headers() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def trace_id_of_headers(headers: Iterable[tuple[str, bytes]] | None) -> str | None:
    """The trace id carried by a message's traceparent header, if any."""
    for k, v in headers or ():
        if k == "traceparent":
            parts = v.decode("latin-1").split("-")
            if len(parts) >= 2:
                return parts[1]
    return None
