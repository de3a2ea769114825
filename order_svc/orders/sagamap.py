"""The saga map: the choreography as the services register it, with each one's live figures.

Each service answers ``GET /api/flow/?window=`` from its own rows (common/messaging/flow.py);
this module asks the four (its own in-process, the others over HTTP, in parallel), builds
the choreography graph from the registries in their answers (the same source and code as
``./manage.py saga graph``), puts each service's figures on its box and on the arrows it
consumes, marks what needs a person, and lays the graph out with Graphviz (``dot``, from the
OS packages) as an inline SVG. The Order admin's home and ``/admin/saga-map/`` show it.

What stands out (class ``problem`` in the SVG, red in the page): a service that does not
answer, whose workers are gone (no consumer on its events queue) or whose relay stopped
beating, that holds parked messages, or whose outbox or events queue is behind; an arrow
whose event was parked or retried in the window, or whose p95 lag is over
:data:`SLOW_P95_MS`.
"""

from __future__ import annotations

import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import graphviz
import requests
from django.conf import settings
from django.utils.http import urlencode

from common.messaging import flow
from common.services import SERVICES
from order_svc.orders import selectors
from order_svc.orders.models import OrderStatus
from tools.choreography import Graph, RegistryUnavailable, build_graph, describe_service

log = logging.getLogger("saga.map")

ASK_TIMEOUT_SECONDS = 3.0
SLOW_P95_MS = 1000.0  # an arrow whose p95 lag is above this stands out
BEHIND_READY = 100  # an events queue with more ready messages than this is behind
BEHIND_OUTBOX_SECONDS = 10.0  # an outbox whose oldest unpublished row is older is behind
RED = "#c0392b"
ORIGIN = {"class": "origin"}  # (``class`` is a keyword: Graphviz's SVG class attribute)
WINDOW_LABELS = {"5m": "last 5 min", "1h": "last hour", "24h": "last 24 h"}

# A service's registry changes only with a deploy: the last one seen is drawn while the
# service does not answer (and asked of its code, once, if it never did).
_registries: dict[str, dict[str, Any]] = {}


def _ask(service: str, window: str) -> dict[str, Any]:
    if service == settings.SERVICE_NAME:
        return flow.report(window)
    url = f"{settings.SAGA_SERVICE_API_URLS[service]}/api/flow/?{urlencode({'window': window})}"
    response = requests.get(
        url, headers={"Authorization": f"Bearer {settings.SAGA_API_TOKEN}"}, timeout=ASK_TIMEOUT_SECONDS
    )
    response.raise_for_status()
    return response.json()


def ask_services(window: str) -> dict[str, dict[str, Any]]:
    """Every service's report for ``window``; ``{"error": …}`` for one that did not answer."""

    def one(service: str) -> dict[str, Any]:
        try:
            return _ask(service, window)
        except Exception as exc:  # noqa: BLE001 - shown on the map
            log.warning("saga map: %s did not answer: %s", service, exc)
            return {"service": service, "error": f"{type(exc).__name__}: {exc}"[:300]}

    others = [s for s in SERVICES if s != settings.SERVICE_NAME]
    with ThreadPoolExecutor(max_workers=len(others)) as pool:
        asked = pool.map(one, others)  # over HTTP, meanwhile this thread (and its connection)
        own = one(settings.SERVICE_NAME)  # reads this service's own report
        reports = {settings.SERVICE_NAME: own, **dict(zip(others, asked, strict=True))}
    return {service: reports[service] for service in SERVICES}


def _registry(service: str, report: dict[str, Any]) -> dict[str, Any] | None:
    if "registry" in report:
        _registries[service] = report["registry"]
    elif service not in _registries:
        try:
            _registries[service] = describe_service(service)
        except RegistryUnavailable as exc:
            log.warning("saga map: no registry for %s: %s", service, exc)
            return None
    return _registries[service]


@dataclass
class Box:
    service: str
    report: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    @property
    def answered(self) -> bool:
        return "error" not in self.report

    def link(self, path: str, **query: str) -> str:
        base = settings.SAGA_SERVICE_URLS[self.service]
        return f"{base}{path}" + (f"?{urlencode(query)}" if query else "")

    @property
    def parked_link(self) -> str:
        return self.link("/admin/messaging/parkedmessage/", status__exact="PARKED")

    @property
    def outbox_link(self) -> str:
        return self.link("/admin/messaging/outboxmessage/", published_at__isempty="1")


@dataclass
class Arrow:
    producer: str  # a service, or an origin's label
    event_type: str
    consumer: str
    compensates: str | None
    figures: dict[str, Any] | None = None  # the consumer's edge figures; None: none in the window
    parked: int = 0  # parked in the consumer in the window (this event type)
    origin: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.producer}_{self.event_type}_{self.consumer}"


@dataclass
class SagaMap:
    window: str
    boxes: dict[str, Box]
    arrows: list[Arrow]
    orders: dict[str, int]
    stuck: int
    graph: Graph | None
    took_ms: float = 0.0
    svg: str = ""

    @property
    def problems(self) -> int:
        return sum(bool(b.problems) for b in self.boxes.values()) + sum(bool(a.problems) for a in self.arrows)


def _box_problems(box: Box) -> list[str]:
    report = box.report
    if not box.answered:
        return [f"does not answer: {report['error']}"]
    found = []
    queues = report.get("queues", {})
    if "error" in queues:
        found.append(f"broker: {queues['error']}")
    elif not report.get("workers_alive"):
        found.append("no worker consumes its events queue")
    if not report["relay"]["alive"]:
        found.append("its relay has not beaten lately")
    if report["parked"]["open_total"]:
        found.append(f"{report['parked']['open_total']} parked message(s) wait for a person")
    ready = queues.get("events", {}).get("ready", 0)
    if ready > BEHIND_READY:
        found.append(f"{ready} events wait in its queue")
    oldest = report["outbox"]["oldest_seconds"]
    if oldest is not None and oldest > BEHIND_OUTBOX_SECONDS:
        found.append(f"its outbox is {oldest:.0f} s behind")
    return found


def _arrow_problems(arrow: Arrow) -> list[str]:
    found = []
    if arrow.parked:
        found.append(f"{arrow.parked} parked")
    figures = arrow.figures or {}
    if figures.get("retries"):
        found.append(f"{figures['retries']} retries")
    p95 = figures.get("lag_p95_ms")
    if p95 is not None and p95 > SLOW_P95_MS:
        found.append(f"p95 lag {p95 / 1000:.1f} s")
    return found


def build(window: str, reports: dict[str, dict[str, Any]]) -> SagaMap:
    """The map of ``window`` from the services' reports (pure: no I/O but a registry fallback)."""
    boxes = {service: Box(service, reports[service]) for service in SERVICES}
    for box in boxes.values():
        box.problems = _box_problems(box)
    registries = [r for r in (_registry(s, reports[s]) for s in SERVICES) if r is not None]
    graph = build_graph(registries) if registries else None
    arrows: list[Arrow] = []
    if graph is not None:
        for edge in graph.edges:
            consumer = reports[edge.consumer]
            figures = next(
                (
                    e
                    for e in consumer.get("edges", [])
                    if e["producer"] == edge.producer and e["event_type"] == edge.event_type
                ),
                None,
            )
            parked = consumer.get("parked", {}).get("in_window", {}).get(edge.event_type, 0)
            arrow = Arrow(edge.producer, edge.event_type, edge.consumer, edge.compensates, figures, parked)
            arrow.problems = _arrow_problems(arrow)
            arrows.append(arrow)
        # An originated event (an order placed, cancelled): as often as its consumers got it.
        for origin in sorted(graph.origins, key=lambda o: (o.by, o.event_type), reverse=True):
            delivered = max(
                (
                    (a.figures or {}).get("delivered", 0)
                    for a in arrows
                    if a.producer == origin.service and a.event_type == origin.event_type
                ),
                default=0,
            )
            figures = {"delivered": delivered} if delivered else None
            arrows.insert(0, Arrow(origin.by, origin.event_type, origin.service, None, figures, origin=True))
    counted = reports["order"].get("counts", {}).get("orders", {})
    orders = {status.value: 0 for status in OrderStatus} | counted
    return SagaMap(window, boxes, arrows, orders, stuck=-1, graph=graph)


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.1f} s"


def _box_label(box: Box) -> str:
    if not box.answered:
        return f"{box.service}\ndoes not answer"
    report = box.report
    events = report.get("queues", {}).get("events", {})
    workers = f"workers: {events.get('consumers', 0)}" if events else "workers: ?"
    relay = "relay: up" if report["relay"]["alive"] else "relay: DOWN"
    lines = [
        box.service,
        f"{workers} · {relay}",
        f"queue {events.get('ready', '?')} ready · retrying {report.get('retrying', 0)}",
        f"parked {report['parked']['open_total']} · outbox {report['outbox']['unpublished']}",
    ]
    return "\n".join(lines)


def _arrow_label(arrow: Arrow) -> str:
    name = arrow.event_type if not arrow.compensates else f"{arrow.event_type}\n(undoes {arrow.compensates})"
    figures = arrow.figures
    if figures is None:
        return f"{name}\n0"
    if arrow.origin:
        return f"{name}\n{figures['delivered']}"
    lag = f"p50 {_ms(figures['lag_p50_ms'])} · p95 {_ms(figures['lag_p95_ms'])}"
    text = f"{name}\n{figures['delivered']} handled\n{lag}"
    extras = [f"{figures['retries']} retries"] * bool(figures["retries"])
    extras += [f"{arrow.parked} parked"] * bool(arrow.parked)
    return text + (f"\n{', '.join(extras)}" if extras else "")


def _css_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")  # (dot would escape a "-")


def to_svg(saga_map: SagaMap) -> str:
    """The map laid out by Graphviz's dot, as an SVG element to put in the page."""
    dot = graphviz.Digraph(
        "saga",
        graph_attr={"rankdir": "TB", "bgcolor": "transparent", "nodesep": "0.2", "ranksep": "0.9"},
        node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica", "fontsize": "11"},
        edge_attr={"fontname": "Helvetica", "fontsize": "9"},
    )
    origins = sorted({a.producer for a in saga_map.arrows if a.origin})
    for number, label in enumerate(origins, 1):
        dot.node(f"origin{number}", label, shape="plaintext", style="", id=f"origin_{number}", **ORIGIN)
    for box in saga_map.boxes.values():
        bad = bool(box.problems)
        dot.node(
            box.service,
            _box_label(box),
            id=f"svc_{box.service}",
            fillcolor="#fde2e1" if bad else "#e8f1fb",
            color=RED if bad else "#2c6fad",
            penwidth="2.5" if bad else "1",
            tooltip="; ".join(box.problems) or f"{box.service}: all well",
            URL=box.link("/admin/"),
            **{"class": "service problem" if bad else "service"},
        )
    for arrow in saga_map.arrows:
        bad = bool(arrow.problems)
        tail = f"origin{origins.index(arrow.producer) + 1}" if arrow.origin else arrow.producer
        idle = arrow.figures is None or not arrow.figures.get("delivered")
        classes = ["arrow"] + ["compensation"] * bool(arrow.compensates) + ["problem"] * bad + ["idle"] * idle
        dot.edge(
            tail,
            arrow.consumer,
            label=_arrow_label(arrow),
            id=f"edge_{_css_id(arrow.key)}",
            style="dashed" if arrow.compensates else "solid",
            color=RED if bad else "#b9770e" if arrow.compensates else "#999999" if idle else "#2c3e50",
            fontcolor=RED if bad else "#333333",
            penwidth="2.5" if bad else "1.2",
            tooltip="; ".join(arrow.problems) or arrow.key,
            **{"class": " ".join(classes)},
        )
    svg = dot.pipe(format="svg", encoding="utf-8")
    return svg[svg.index("<svg") :]


def saga_map(window: str) -> SagaMap:
    """Ask the services, build the map, draw it: what the page shows."""
    started = time.perf_counter()
    built = build(window, ask_services(window))
    built.stuck = selectors.order_stuck().count()
    built.svg = to_svg(built)
    built.took_ms = (time.perf_counter() - started) * 1000
    return built
