#!/usr/bin/env python3
"""A minimal OTLP/HTTP trace receiver that keeps spans in memory, for the test suite.

    scripts/span_sink.py --port 4318        # services export with OTEL_TRACES_EXPORTER=otlp
    GET  /spans?saga_id=<order id>          # the spans whose saga_id attribute matches (JSON)
    POST /v1/traces                         # OTLP protobuf, as the SDK's exporter sends it

Listens on 127.0.0.1 only and keeps at most --limit spans (oldest dropped).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def _value(any_value) -> object:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def decode(body: bytes) -> list[dict[str, object]]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "service": resource.get("service.name"),
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                        "start_unix_nano": span.start_time_unix_nano,
                    }
                )
    return spans


class Sink:
    """The spans, oldest dropped beyond ``limit``, indexed by trace id and saga id.

    The index keeps a query's cost to the spans it returns: the tracing test polls while
    the whole suite's spans (100 000 or more) are held, and a scan of all of them under
    the GIL would hold up the exporters' POSTs behind it.
    """

    INDEXED = ("trace_id", "saga_id")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spans: deque[dict[str, object]] = deque()
        self.index: dict[tuple[str, str], list[dict[str, object]]] = defaultdict(list)
        self.lock = threading.Lock()

    @staticmethod
    def _keys(span: dict[str, object]) -> list[tuple[str, str]]:
        keys = [("trace_id", str(span["trace_id"]))]
        saga_id = span["attributes"].get("saga_id")  # type: ignore[union-attr]
        if saga_id is not None:
            keys.append(("saga_id", str(saga_id)))
        return keys

    def add(self, spans: list[dict[str, object]]) -> None:
        with self.lock:
            for span in spans:
                self.spans.append(span)
                for key in self._keys(span):
                    self.index[key].append(span)
            while len(self.spans) > self.limit:
                oldest = self.spans.popleft()
                for key in self._keys(oldest):
                    bucket = self.index[key]
                    bucket.pop(0)  # spans are added in order: the oldest is first in each bucket
                    if not bucket:
                        del self.index[key]

    def query(self, **filters: str) -> list[dict[str, object]]:
        indexed = [(k, v) for k, v in filters.items() if k in self.INDEXED]
        with self.lock:
            spans = list(self.index.get(indexed[0], ())) if indexed else list(self.spans)
        for key, wanted in filters.items():
            if key == "trace_id":
                spans = [s for s in spans if s["trace_id"] == wanted]
            else:
                spans = [s for s in spans if str(s["attributes"].get(key)) == wanted]
        return spans


def handler_for(sink: Sink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Keep-alive: each exporter reuses its connection instead of a new one per batch.
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))  # read even for a 404
            if urlparse(self.path).path != "/v1/traces":
                self._reply(404, b"", "text/plain")
                return
            try:
                sink.add(decode(body))
            except Exception as exc:  # noqa: BLE001 - a bad request, not a crash
                print(f"span sink: rejected a batch of {len(body)} bytes: {exc}", file=sys.stderr, flush=True)
                self._reply(400, str(exc).encode(), "text/plain")
                return
            self._reply(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")

        def do_GET(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            if url.path != "/spans":
                self._reply(404, b"", "text/plain")
                return
            filters = {k: v[0] for k, v in parse_qs(url.query).items()}
            self._reply(200, json.dumps(sink.query(**filters)).encode(), "application/json")

    return Handler


class Server(ThreadingHTTPServer):
    # A deeper listen backlog than socketserver's 5: some 25 processes export to it, and a
    # full backlog drops their SYNs, which delays a batch by the kernel's 1 s retransmit.
    request_queue_size = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--limit", type=int, default=200_000)
    args = parser.parse_args()
    server = Server(("127.0.0.1", args.port), handler_for(Sink(args.limit)))
    server.serve_forever()


if __name__ == "__main__":
    main()
