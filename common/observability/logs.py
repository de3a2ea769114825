"""Structured logs, the same in every process of every service.

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
from typing import Any

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from common.observability.context import current_event
from common.observability.tracing import trace_id_of


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
