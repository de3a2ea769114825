"""Tracing (OpenTelemetry), the same in every process of every service.

One order is one trace: the Django instrumentation starts it at the REST request (or
continues the caller's ``traceparent``), ``emit`` stores the current span's context in
the envelope (and so in the outbox row), and the consumer continues it around each
handler, whose own emits carry it on. Spans carry ``saga_id`` and ``event_type``.

The exporter is chosen by the standard variables: ``OTEL_TRACES_EXPORTER=otlp`` (with
``OTEL_EXPORTER_OTLP_ENDPOINT``, HTTP/protobuf) or ``console``; unset or ``none`` — the
default — exports nothing, but trace ids still exist for the logs (logs.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind

from common.observability.context import current_event, current_tracing, new_traceparent, tracing

_configured = False
_exporting = False


def _exporter() -> SpanExporter | None:
    choice = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
    if choice in ("", "none"):
        return None
    if choice == "console":
        return ConsoleSpanExporter()
    if choice == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise ValueError(f"OTEL_TRACES_EXPORTER={choice!r}: this platform supports otlp, console or none")


def setup_tracing(service: str) -> None:
    """Install the tracer provider and the Django and Celery instrumentation (once per process)."""
    global _configured, _exporting  # noqa: PLW0603 - one provider per process
    if _configured:
        return
    _configured = True
    exporter = _exporter()
    if exporter is None:
        # Nothing would read the spans: make none (no instrumentation either). Events still
        # carry a W3C trace context from the order on (common/observability/context.py), so log lines
        # and the order's timeline can still be tied together by trace id.
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _exporting = True
    trace.set_tracer_provider(provider)
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    DjangoInstrumentor().instrument(excluded_urls="healthz,metrics,static/.*")
    CeleryInstrumentor().instrument()


def trace_id_of(headers: dict[str, str]) -> str:
    """The trace id in W3C headers (``traceparent: 00-<trace id>-<span id>-<flags>``), or ""."""
    parts = headers.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


def tracing_enabled() -> bool:
    """Are spans exported? (Without an exporter, spans that nobody reads can be skipped.)"""
    return _exporting


def tracer() -> trace.Tracer:
    return trace.get_tracer("saga")


def inject_current() -> dict[str, str]:
    """The current span's context as W3C headers (``traceparent``), or {} if none."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextmanager
def consuming(
    *, service: str, event_type: str, saga_id: str, event_id: str, trace_headers: dict[str, str]
) -> Iterator[Span]:
    """A consumer span for one event, continuing the trace the event carries.

    Without an exporter nobody would read the span: none is made (a third of the
    consumer's own overhead per delivery). What the handler emits still continues the
    event's trace (``current_trace`` falls back to it) and log lines still carry its id.
    """
    if not _exporting:
        yield trace.INVALID_SPAN
        return
    with _messaging_span(
        f"{service} handle {event_type}",
        trace_headers,
        SpanKind.CONSUMER,
        "process",
        saga_id=saga_id,
        event_type=event_type,
        event_id=event_id,
        service=service,
    ) as span:
        yield span


def _messaging_span(
    name: str, trace_headers: dict[str, str], kind: SpanKind, operation: str, *, service: str, **ids: str
) -> Any:
    """A span continuing ``trace_headers``' trace, with the saga's ids and RabbitMQ's attributes."""
    return tracer().start_as_current_span(
        name,
        context=propagate.extract(trace_headers),
        kind=kind,
        attributes={
            **ids,
            "saga.service": service,
            "messaging.system": "rabbitmq",
            "messaging.operation": operation,
        },
    )


@contextmanager
def publishing(
    *, service: str, event_type: str, saga_id: str, trace_headers: dict[str, str]
) -> Iterator[Span]:
    """The relay's span around publishing one outbox row (shows the outbox delay)."""
    with _messaging_span(
        f"{service} publish {event_type}",
        trace_headers,
        SpanKind.PRODUCER,
        "publish",
        saga_id=saga_id,
        event_type=event_type,
        service=service,
    ) as span:
        yield span


@contextmanager
def publishing_each(service: str, events: list[tuple[str, str, dict[str, str]]]) -> Iterator[None]:
    """A publish span per ``(event_type, saga_id, trace_headers)``, each continuing its own saga's
    trace (explicit parent, whatever is current), around publishing them as one batch."""
    if not tracing_enabled():
        yield
        return
    with ExitStack() as stack:
        for event_type, saga_id, trace_headers in events:
            stack.enter_context(
                publishing(
                    service=service, event_type=event_type, saga_id=saga_id, trace_headers=trace_headers
                )
            )
        yield


@contextmanager
def continuing(trace_headers: dict[str, str], name: str, **attributes: str) -> Iterator[Span]:
    """A span in an earlier trace (e.g. the order's own), whatever span is active now.

    Without an exporter: no span, but what is emitted inside still carries that trace.
    """
    if not _exporting:
        with tracing(trace_headers):
            yield trace.INVALID_SPAN
        return
    with tracer().start_as_current_span(
        name, context=propagate.extract(trace_headers), attributes=attributes
    ) as span:
        yield span


def annotate(**attributes: Any) -> None:
    """Add attributes (e.g. ``saga_id`` once the order exists) to the current span."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({key: str(value) for key, value in attributes.items()})


def current_trace() -> dict[str, str]:
    """The trace context an emitted event carries: the active span's, else the handled
    event's, else one set by ``tracing()``, else a new trace."""
    active = inject_current()
    if active:
        return active
    event = current_event()
    if event is not None and event.trace:
        return dict(event.trace)
    trace = current_tracing()
    if trace:
        return dict(trace)
    return {"traceparent": new_traceparent()}
