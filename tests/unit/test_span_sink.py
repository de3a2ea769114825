"""scripts/span_sink.py, the test suite's OTLP receiver: its index, its eviction, its HTTP side."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tests.support import load_script

span_sink = load_script("span_sink")


def span(n: int, trace: str, saga: str | None) -> dict[str, object]:
    attributes = {} if saga is None else {"saga_id": saga}
    return {"name": f"s{n}", "trace_id": trace, "span_id": f"{n:016x}", "attributes": attributes}


def names(spans: list[dict[str, object]]) -> list[object]:
    return [s["name"] for s in spans]


def test_queries_by_trace_and_saga_return_the_matching_spans_in_order() -> None:
    sink = span_sink.Sink(limit=100)
    sink.add([span(1, "t1", "o1"), span(2, "t2", "o2"), span(3, "t1", None), span(4, "t1", "o1")])
    assert names(sink.query(trace_id="t1")) == ["s1", "s3", "s4"]
    assert names(sink.query(saga_id="o1")) == ["s1", "s4"]
    assert names(sink.query(saga_id="o1", trace_id="t1")) == ["s1", "s4"]
    assert names(sink.query(saga_id="o2", trace_id="t1")) == []
    assert names(sink.query(trace_id="none")) == []
    assert len(sink.query()) == 4


def test_the_oldest_spans_go_past_the_limit_and_leave_the_index() -> None:
    sink = span_sink.Sink(limit=3)
    sink.add([span(1, "t1", "o1"), span(2, "t2", "o2")])
    sink.add([span(3, "t1", "o1"), span(4, "t3", None), span(5, "t1", "o1")])
    assert names(sink.query()) == ["s3", "s4", "s5"]
    assert names(sink.query(trace_id="t1")) == ["s3", "s5"]
    assert names(sink.query(saga_id="o1")) == ["s3", "s5"]
    assert sink.query(trace_id="t2") == []
    assert sink.query(saga_id="o2") == []
    # An emptied bucket is dropped, so the index does not grow with every trace ever seen.
    assert ("trace_id", "t2") not in sink.index
    assert ("saga_id", "o2") not in sink.index


def otlp_body(trace: bytes, saga: str, name: str) -> bytes:
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource={"attributes": [KeyValue(key="service.name", value=AnyValue(string_value="order"))]},
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                trace_id=trace,
                                span_id=b"\x01" * 8,
                                name=name,
                                attributes=[KeyValue(key="saga_id", value=AnyValue(string_value=saga))],
                            )
                        ]
                    )
                ],
            )
        ]
    )
    return request.SerializeToString()


@pytest.fixture
def sink_url() -> Iterator[str]:
    server = span_sink.Server(("127.0.0.1", 0), span_sink.handler_for(span_sink.Sink(limit=1000)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_over_http_exports_share_one_connection_and_are_found(sink_url: str) -> None:
    assert span_sink.Server.request_queue_size >= 64
    conn = http.client.HTTPConnection(urlsplit(sink_url).netloc, timeout=10)
    sockets = set()

    def post(path: str, body: bytes) -> int:
        conn.request("POST", path, body, {"Content-Type": "application/x-protobuf"})
        reply = conn.getresponse()
        reply.read()
        assert not reply.will_close, "the sink closed the connection after a request (no keep-alive)"
        sockets.add(id(conn.sock))
        return reply.status

    try:
        assert post("/v1/traces", otlp_body(b"\xab" * 16, "o-1", "first")) == 200
        # A 404 leaves the connection usable: its body was read, not left in the stream.
        assert post("/elsewhere", b"x" * 1000) == 404
        assert post("/v1/traces", b"\xff\xff") == 400
        assert post("/v1/traces", otlp_body(b"\xab" * 16, "o-1", "second")) == 200
    finally:
        conn.close()
    assert len(sockets) == 1
    found = requests.get(f"{sink_url}/spans", params={"trace_id": "ab" * 16}, timeout=10).json()
    assert [s["name"] for s in found] == ["first", "second"]
    assert {s["service"] for s in found} == {"order"}
    assert [s["attributes"]["saga_id"] for s in found] == ["o-1", "o-1"]
