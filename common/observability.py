"""Tracing (OpenTelemetry) and structured logs, the same in every process of every service.

One order is one trace: the Django instrumentation starts it at the REST request (or
continues the caller's ``traceparent``), ``emit`` stores the current span's context in
the envelope (and so in the outbox row), and the consumer continues it around each
handler, whose own emits carry it on. Spans carry ``saga_id`` and ``event_type``.

The exporter is chosen by the standard variables: ``OTEL_TRACES_EXPORTER=otlp`` (with
``OTEL_EXPORTER_OTLP_ENDPOINT``, HTTP/protobuf) or ``console``; unset or ``none`` — the
default — exports nothing, but trace ids still exist for the logs.

Logs are JSON lines (``SAGA_LOG_FORMAT=plain`` for a terminal); every line written
while an event is handled carries ``saga_id``, ``event_id``, ``event_type`` and
``trace_id`` without the caller having to pass them. They are written in batches
(``BatchingStreamHandler``): a warning or worse at once, with whatever came before it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind
from pythonjsonlogger.json import JsonFormatter

from common.context import current_event, current_tracing, new_traceparent, tracing

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
        # carry a W3C trace context from the order on (common/context.py), so log lines
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
    with tracer().start_as_current_span(
        f"{service} handle {event_type}",
        context=propagate.extract(trace_headers),
        kind=SpanKind.CONSUMER,
        attributes={
            "saga_id": saga_id,
            "event_type": event_type,
            "event_id": event_id,
            "saga.service": service,
            "messaging.system": "rabbitmq",
            "messaging.operation": "process",
        },
    ) as span:
        yield span


@contextmanager
def publishing(
    *, service: str, event_type: str, saga_id: str, trace_headers: dict[str, str]
) -> Iterator[Span]:
    """The relay's span around publishing one outbox row (shows the outbox delay)."""
    with tracer().start_as_current_span(
        f"{service} publish {event_type}",
        context=propagate.extract(trace_headers),
        kind=SpanKind.PRODUCER,
        attributes={
            "saga_id": saga_id,
            "event_type": event_type,
            "saga.service": service,
            "messaging.system": "rabbitmq",
            "messaging.operation": "publish",
        },
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


class EventContextFilter(logging.Filter):
    """Stamp every record with the service, and the event and trace being handled."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        event = current_event()
        if event is not None:
            for name, value in (
                ("saga_id", event.saga_id),
                ("event_id", event.event_id),
                ("event_type", event.event_type),
            ):
                if getattr(record, name, None) is None:
                    setattr(record, name, value)
        context = trace.get_current_span().get_span_context()
        if context.is_valid and getattr(record, "trace_id", None) is None:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        elif event is not None and getattr(record, "trace_id", None) is None:
            record.trace_id = trace_id_of(event.trace) or None
        return True


class BatchingStreamHandler(logging.StreamHandler):
    """Writes log lines to the stream in batches: one write per ``delay`` seconds, not per line.

    Under load every process logs a line per event it handles, and each write wakes
    supervisord, which reads the pipe and scans all its programs: about 1 ms of its CPU per
    saga, a thirtieth of the whole saga's, for ten writes (make bench). Here lines are
    formatted at once (in the caller's thread, with its context) and written by a thread
    ``delay`` seconds after the first of a batch. A warning or an error is written at once,
    after the lines before it, in the caller's thread: nothing that explains a failure waits.
    ``flush()`` (``logging.shutdown`` at exit) writes what is pending; a process killed
    outright loses at most ``delay`` seconds of info lines.
    """

    def __init__(self, stream: Any = None, delay: float = 0.05) -> None:
        super().__init__(stream)
        self.delay = delay
        self._pending: list[str] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        os.register_at_fork(after_in_child=self._forget)

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            self._pending.append(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging must not raise (logging.Handler's rule)
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING or self.delay <= 0:
            self._write()
        elif len(self._pending) == 1:  # the first of a batch: the writer writes it soon
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
                self._thread.start()
            self._wake.set()

    def flush(self) -> None:
        with self.lock:
            self._write()

    def _write(self) -> None:
        """Write and flush the pending lines (the caller holds ``self.lock``)."""
        if not self._pending:
            return
        text, self._pending = "".join(self._pending), []
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream: nothing left to tell
            pass

    def _run(self) -> None:
        wake = self._wake
        while True:
            wake.wait()
            wake.clear()
            time.sleep(self.delay)  # let the batch gather
            self.flush()

    def _forget(self) -> None:
        """In a forked child: the parent writes its own pending lines, and its thread is not here."""
        self._pending = []
        self._wake = threading.Event()
        self._thread = None


def logging_config(service: str, level: str) -> dict[str, Any]:
    json_lines = os.environ.get("SAGA_LOG_FORMAT", "json").lower() != "plain"
    formatter = (
        {
            "()": JsonFormatter,
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
        if json_lines
        else {"format": "%(asctime)s %(levelname)s [%(name)s] %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"event_context": {"()": EventContextFilter, "service": service}},
        "formatters": {"main": formatter},
        "handlers": {
            "console": {
                "()": BatchingStreamHandler,
                "stream": sys.stderr,
                "delay": float(os.environ.get("SAGA_LOG_BATCH_SECONDS", "0.05")),
                "formatter": "main",
                "filters": ["event_context"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            "amqp": {"level": "WARNING"},
            "kombu": {"level": "WARNING"},
        },
    }


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
