"""A worker's or relay's own /metrics (SAGA_METRICS_PORT) and the database gauges.

No Django, no broker: the server is started on a free loopback port and read over
HTTP; the database gauges are fed by a stand-in reader.
"""

from __future__ import annotations

import urllib.request

import pytest
from celery.signals import worker_init
from prometheus_client import CollectorRegistry, generate_latest

from common.observability import metrics
from common.observability.metrics import DatabaseGauges, DatabaseState, start_metrics_server


@pytest.fixture
def fresh(monkeypatch):
    """No server started yet in this process; every server and collector undone afterwards."""
    servers: dict = {}
    gauges: dict = {}
    monkeypatch.setattr(metrics, "_servers", servers)
    monkeypatch.setattr(metrics, "_database_gauges", gauges)
    monkeypatch.delenv("SAGA_METRICS_PORT", raising=False)
    monkeypatch.delenv("SAGA_METRICS_ADDRESS", raising=False)
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()
    for collector in gauges.values():
        metrics.REGISTRY.unregister(collector)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return response.read().decode()


def test_nothing_is_served_without_the_variable(fresh) -> None:
    assert start_metrics_server() is None
    assert start_metrics_server(database_gauges_of="order") is None
    assert fresh == {}


def test_the_process_serves_its_metrics_once(fresh, monkeypatch) -> None:
    monkeypatch.setenv("SAGA_METRICS_PORT", "0")  # any free port
    metrics.DELIVERIES.labels("inventory", "OrderPlaced", "handled").inc()
    port = start_metrics_server()
    assert port
    assert start_metrics_server() == port  # once per process
    assert len(fresh) == 1
    text = scrape(port)
    assert 'saga_deliveries_total{event_type="OrderPlaced",outcome="handled",service="inventory"}' in text
    assert "saga_outbox_oldest_unpublished_seconds" in text


def test_the_default_address_is_loopback(fresh, monkeypatch) -> None:
    monkeypatch.setenv("SAGA_METRICS_PORT", "0")
    start_metrics_server()
    (server,) = fresh.values()
    assert server.server_address[0] == "127.0.0.1"


@pytest.mark.parametrize("raw", ["metrics", "-1", "70000", "9100.5"])
def test_a_bad_port_is_refused_clearly(fresh, monkeypatch, raw: str) -> None:
    monkeypatch.setenv("SAGA_METRICS_PORT", raw)
    with pytest.raises(ValueError, match="SAGA_METRICS_PORT"):
        start_metrics_server()


def test_a_taken_port_is_logged_not_fatal(fresh, monkeypatch, caplog) -> None:
    monkeypatch.setenv("SAGA_METRICS_PORT", "0")
    taken = start_metrics_server()
    monkeypatch.setattr(metrics, "_servers", {})  # as if another process of this container
    monkeypatch.setenv("SAGA_METRICS_PORT", str(taken))
    assert start_metrics_server() is None
    assert "cannot serve metrics" in caplog.text


def test_the_worker_starts_its_server_when_celery_initialises_it(fresh, monkeypatch) -> None:
    import common.messaging.celery  # noqa: F401 - connects the worker_init receiver

    worker_init.send(sender=None)
    assert fresh == {}  # unset: nothing
    monkeypatch.setenv("SAGA_METRICS_PORT", "0")
    worker_init.send(sender=None)
    (server,) = fresh.values()
    assert "saga_deliveries_total" in scrape(server.server_port)


def test_database_gauges_are_read_at_scrape_time() -> None:
    reads = []

    def read(service: str) -> DatabaseState:
        reads.append(service)
        return DatabaseState(parked=3, stuck={"PENDING": 1, "COMPENSATING": 2})

    registry = CollectorRegistry()
    registry.register(DatabaseGauges("order", read))
    assert reads == []  # registering does not query
    text = generate_latest(registry).decode()
    assert reads == ["order"]
    assert 'saga_parked_messages{service="order"} 3.0' in text
    assert 'saga_stuck_sagas{service="order",status="COMPENSATING"} 2.0' in text
    assert 'saga_stuck_sagas{service="order",status="PENDING"} 1.0' in text


def test_a_service_without_a_stuck_reader_reports_no_stuck_sagas() -> None:
    registry = CollectorRegistry()
    registry.register(DatabaseGauges("payment", lambda service: DatabaseState(parked=0)))
    text = generate_latest(registry).decode()
    assert 'saga_parked_messages{service="payment"} 0.0' in text
    assert "saga_stuck_sagas" not in text


def test_a_failing_database_read_leaves_the_scrape_working(fresh, monkeypatch, caplog) -> None:
    """The database is down (here: a reader that raises): the endpoint must still answer."""

    def unreachable(service: str) -> DatabaseState:
        raise OSError("could not connect to server")

    monkeypatch.setattr(metrics, "read_database_state", unreachable)
    monkeypatch.setenv("SAGA_METRICS_PORT", "0")
    port = start_metrics_server(database_gauges_of="shipping")
    text = scrape(port)
    assert "saga_deliveries_total" in text
    assert "saga_parked_messages{" not in text
    assert "could not read the database gauges of shipping" in caplog.text


def test_the_real_reader_fails_cleanly_without_django() -> None:
    """No settings (as in these tests): the reader raises, the collector reports nothing."""
    assert list(DatabaseGauges("order").collect()) == []


def test_stuck_sagas_are_reported_where_a_domain_app_registered_a_reader(monkeypatch) -> None:
    """common/ knows no service: the order app registers how its stuck sagas are counted."""
    monkeypatch.setattr(metrics, "_stuck_reader", [])
    assert [f.name for f in DatabaseGauges("payment").describe()] == ["saga_parked_messages"]
    metrics.register_stuck_sagas(lambda grace: {"PENDING": 4})
    assert [f.name for f in DatabaseGauges("order").describe()] == [
        "saga_parked_messages",
        "saga_stuck_sagas",
    ]
