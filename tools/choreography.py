"""The saga's choreography, derived from the handler registries of the services.

``./manage.py saga graph`` asks each service for its registry (``./manage.py <svc>
registry``, one subprocess per service: each needs its own Django settings) and
prints who emits what, who consumes what and which step compensates which, as a
Mermaid flowchart (the README's saga diagram) or as JSON. ``--check`` prints the
problems below instead and exits 1 if there is any.

The graph is built and checked by pure functions of the services' descriptions
(``EventRegistry.describe()``), so they are tested without subprocesses. The notices
of the messaging layer (``MessageRetried``, ``MessageParked``: any service emits them,
the Order service's timeline shows them) are observability, not steps, and are left out.

Problems (each names the event and the services):

1. An event is emitted (a handler's ``emits`` or an ``originates``) that no service
   consumes.
2. A handler consumes an event that no service emits or originates.
3. A forward step has no compensation path. A *failure* is an event some handler
   declares ``compensates`` on, or one named as a failure (``…Failed``, ``…Declined``,
   ``…Rejected``: STYLE.md's "failures are events too"). A *forward step* is an event
   a handler emits after which the saga can still fail: a failure from another
   service is reachable from it through the handlers' ``emits``. Its producer must
   handle each such failure with ``compensates`` naming it. (Originated events start
   the saga: their originator follows its outcome rather than undoing a step.)
4. The cancellation event (``OrderCancelled``, originated while the saga runs, so it
   can follow any step) is not answered properly: every service that consumes it
   must declare what it ``compensates`` there, and every service that emits an event
   some handler compensates must consume it.
5. A handler ``compensates`` an event its own service does not emit: a service
   undoes only its own steps.
6. An event type has a contract in ``contracts/events.json`` but is neither emitted
   nor consumed, or appears in the graph without a contract.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from common.messaging.registry import NOTICE_EVENTS
from common.services import SERVICES

ROOT = Path(__file__).resolve().parent.parent
MANAGE = ROOT / "manage.py"
CONTRACTS_FILE = ROOT / "contracts" / "events.json"
CANCELLATION = "OrderCancelled"
FAILURE_VERBS = ("Failed", "Declined", "Rejected")
REGISTRY_TIMEOUT_SECONDS = 120


class RegistryUnavailable(RuntimeError):
    """A service could not describe its registry (its ``registry`` command failed)."""


@dataclass(frozen=True)
class Origin:
    service: str
    event_type: str
    by: str


@dataclass(frozen=True)
class Consumer:
    service: str
    event_type: str
    emits: tuple[str, ...]
    compensates: str | None


@dataclass(frozen=True)
class Edge:
    producer: str
    event_type: str
    consumer: str
    compensates: str | None


@dataclass(frozen=True)
class Graph:
    services: tuple[str, ...]
    origins: tuple[Origin, ...]
    consumers: tuple[Consumer, ...]

    @cached_property
    def producers(self) -> dict[str, set[str]]:
        """Event type -> the services that emit or originate it."""
        found: dict[str, set[str]] = {}
        for origin in self.origins:
            found.setdefault(origin.event_type, set()).add(origin.service)
        for consumer in self.consumers:
            for event_type in consumer.emits:
                found.setdefault(event_type, set()).add(consumer.service)
        return found

    @cached_property
    def consumed_by(self) -> dict[str, list[Consumer]]:
        found: dict[str, list[Consumer]] = {}
        for consumer in self.consumers:
            found.setdefault(consumer.event_type, []).append(consumer)
        return found

    @property
    def event_types(self) -> set[str]:
        return set(self.producers) | set(self.consumed_by)

    def handler(self, service: str, event_type: str) -> Consumer | None:
        return next((c for c in self.consumed_by.get(event_type, []) if c.service == service), None)

    def ranks(self, *, forward_only: bool = False) -> dict[str, int]:
        """How many handler steps each event is from an originated one (the saga's reading order).

        With ``forward_only``, only through the handlers that compensate nothing.
        """
        ranks = {origin.event_type: 0 for origin in self.origins}
        frontier = sorted(ranks)
        while frontier:
            following = []
            for event_type in frontier:
                for consumer in self.consumed_by.get(event_type, []):
                    if forward_only and consumer.compensates:
                        continue
                    for emitted in consumer.emits:
                        if emitted not in ranks:
                            ranks[emitted] = ranks[event_type] + 1
                            following.append(emitted)
            frontier = sorted(following)
        return ranks

    def downstream(self, event_type: str) -> set[str]:
        """The events that can follow ``event_type`` through the handlers' ``emits``."""
        seen: set[str] = set()
        todo = [event_type]
        while todo:
            for consumer in self.consumed_by.get(todo.pop(), []):
                for emitted in consumer.emits:
                    if emitted not in seen:
                        seen.add(emitted)
                        todo.append(emitted)
        return seen

    @property
    def edges(self) -> list[Edge]:
        """One edge per (producer, event, consumer), in reading order.

        First the forward flow, then the compensating edges, then the rest (the
        confirmations of the compensations), each in the order of the saga.
        """
        forward, ranks = self.ranks(forward_only=True), self.ranks()
        unreached = len(self.event_types) + 1

        def reading_order(edge: Edge) -> tuple[int, int, str, str, str]:
            group = 1 if edge.compensates else 0 if edge.event_type in forward else 2
            rank = ranks.get(edge.event_type, unreached)
            return (group, rank, edge.event_type, edge.producer, edge.consumer)

        edges = [
            Edge(producer, consumer.event_type, consumer.service, consumer.compensates)
            for consumer in self.consumers
            for producer in self.producers.get(consumer.event_type, ())
        ]
        return sorted(edges, key=reading_order)


def build_graph(descriptions: Iterable[Mapping[str, Any]]) -> Graph:
    """The graph of the services' ``EventRegistry.describe()`` outputs."""
    services: list[str] = []
    origins: list[Origin] = []
    consumers: list[Consumer] = []
    for description in descriptions:
        service = description["service"]
        if service in services:
            raise ValueError(f"two descriptions of the service {service!r}")
        services.append(service)
        origins += [Origin(service, o["event_type"], o["by"]) for o in description["originates"]]
        consumers += [
            Consumer(service, c["event_type"], tuple(c["emits"]), c["compensates"])
            for c in description["consumes"]
        ]
    return Graph(tuple(sorted(services)), tuple(origins), tuple(consumers))


def _node(service: str) -> str:
    return "".join(part.capitalize() for part in service.split("_"))


def _quoted(text: str) -> str:
    return '"' + text.replace('"', "#quot;") + '"'


def to_mermaid(graph: Graph) -> str:
    """A Mermaid flowchart: one node per service and per distinct origin, one edge per consumer.

    A consumer that compensates is drawn dashed, labelled with what it undoes.
    """
    origin_ids = {by: f"origin{n}" for n, by in enumerate(sorted({o.by for o in graph.origins}), 1)}
    lines = ["flowchart LR"]
    lines += [f"    {node_id}([{_quoted(by)}])" for by, node_id in origin_ids.items()]
    lines += [f"    {_node(service)}" for service in graph.services]
    for origin in sorted(graph.origins, key=lambda o: (o.by, o.event_type, o.service)):
        lines.append(f"    {origin_ids[origin.by]} -- {origin.event_type} --> {_node(origin.service)}")
    for edge in graph.edges:
        producer, consumer = _node(edge.producer), _node(edge.consumer)
        if edge.compensates is None:
            lines.append(f"    {producer} -- {edge.event_type} --> {consumer}")
        else:
            label = _quoted(f"{edge.event_type} (undoes {edge.compensates})")
            lines.append(f"    {producer} -. {label} .-> {consumer}")
    return "\n".join(lines) + "\n"


def to_json(graph: Graph) -> str:
    return json.dumps(
        {
            "services": list(graph.services),
            "origins": [asdict(o) for o in graph.origins],
            "consumers": [asdict(c) for c in graph.consumers],
            "edges": [asdict(e) for e in graph.edges],
        },
        indent=2,
    )


def _names(services: Iterable[str]) -> str:
    return ", ".join(sorted(services)) or "no service"


def problems(
    graph: Graph,
    *,
    contract_events: Iterable[str] | None = None,
    contract_producers: Mapping[str, Iterable[str]] | None = None,
    cancellation: str = CANCELLATION,
) -> list[str]:
    """Everything wrong with the choreography (see the module docstring), one sentence each."""
    return [
        *_unconsumed(graph),
        *_unproduced(graph),
        *_uncompensated_forward_steps(graph),
        *_unanswered_cancellation(graph, cancellation),
        *_foreign_compensations(graph),
        *([] if contract_events is None else _contract_mismatches(graph, set(contract_events))),
        *([] if contract_producers is None else _producer_mismatches(graph, contract_producers)),
    ]


def _unconsumed(graph: Graph) -> list[str]:
    return [
        f"{event_type} is emitted by {_names(producers)} but no service consumes it"
        for event_type, producers in sorted(graph.producers.items())
        if event_type not in graph.consumed_by
    ]


def _unproduced(graph: Graph) -> list[str]:
    return [
        f"{_names(c.service for c in consumers)} handles {event_type} but no service emits it"
        for event_type, consumers in sorted(graph.consumed_by.items())
        if event_type not in graph.producers
    ]


def _uncompensated_forward_steps(graph: Graph) -> list[str]:
    failures = {c.event_type for c in graph.consumers if c.compensates} | {
        e for e in graph.event_types if e.endswith(FAILURE_VERBS)
    }
    found = set()
    for step in graph.consumers:
        for emitted in step.emits:
            for failure in graph.downstream(emitted) & failures:
                if step.service in graph.producers.get(failure, ()):
                    continue  # it fails in the same service: undone where it is reported
                handler = graph.handler(step.service, failure)
                if handler is None or handler.compensates != emitted:
                    found.add(
                        f"{step.service} emits {emitted} and {failure} can follow it, but {step.service} "
                        f"has no handler for {failure} that compensates {emitted}"
                    )
    return sorted(found)


def _unanswered_cancellation(graph: Graph, cancellation: str) -> list[str]:
    found = [
        f"{consumer.service} handles the cancellation {cancellation} without `compensates`: "
        f"say which of its steps it undoes"
        for consumer in graph.consumed_by.get(cancellation, [])
        if consumer.compensates is None
    ]
    compensated = {c.compensates for c in graph.consumers if c.compensates}
    for event_type in sorted(compensated):
        for service in sorted(graph.producers.get(event_type, ())):
            if graph.handler(service, cancellation) is None:
                found.append(
                    f"{service} emits {event_type}, which is compensated, but has no handler for "
                    f"the cancellation {cancellation}: a cancelled saga would keep it"
                )
    return sorted(found)


def _foreign_compensations(graph: Graph) -> list[str]:
    return sorted(
        f"{c.service} compensates {c.compensates} on {c.event_type}, but {c.compensates} is emitted by "
        f"{_names(graph.producers.get(c.compensates, ()))}: a service undoes only its own steps"
        for c in graph.consumers
        if c.compensates and c.service not in graph.producers.get(c.compensates, ())
    )


def _contract_mismatches(graph: Graph, contract_events: set[str]) -> list[str]:
    where = CONTRACTS_FILE.relative_to(ROOT)
    return [
        *(
            f"{event_type} has a contract in {where} but no service emits or consumes it"
            for event_type in sorted(contract_events - graph.event_types)
        ),
        *(
            f"{event_type} (emitted by {_names(graph.producers.get(event_type, ()))}, consumed by "
            f"{_names(c.service for c in graph.consumed_by.get(event_type, []))}) has no contract in {where}"
            for event_type in sorted(graph.event_types - contract_events)
        ),
    ]


def _producer_mismatches(graph: Graph, contract_producers: Mapping[str, Iterable[str]]) -> list[str]:
    """Consumers park an event from a producer the contract does not allow: the two must agree."""
    where = CONTRACTS_FILE.relative_to(ROOT)
    found = []
    for event_type, producers in sorted(graph.producers.items()):
        allowed = set(contract_producers.get(event_type, ()))
        if producers != allowed:
            found.append(
                f"{event_type} is emitted by {_names(producers)} but {where} allows "
                f"{_names(allowed) if allowed else 'no producer'}: consumers would park it"
            )
    return found


def describe_service(service: str) -> dict[str, Any]:
    """``./manage.py <service> registry``, parsed."""
    command = [sys.executable, str(MANAGE), service, "registry"]
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=REGISTRY_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RegistryUnavailable(
            f"./manage.py {service} registry did not answer within {REGISTRY_TIMEOUT_SECONDS}s"
        ) from exc
    if done.returncode != 0:
        raise RegistryUnavailable(
            f"./manage.py {service} registry failed (exit {done.returncode}); run it to see why:\n"
            f"{done.stderr.strip()[-2000:]}"
        )
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise RegistryUnavailable(f"./manage.py {service} registry printed no JSON: {exc}") from exc


def describe_services(services: Sequence[str]) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        return list(pool.map(describe_service, services))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="./manage.py saga", description="The saga choreography of all the services."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    graph = commands.add_parser(
        "graph", help="who emits, consumes and compensates what, from the handler registries"
    )
    graph.add_argument("--format", choices=("mermaid", "json"), default="mermaid")
    graph.add_argument(
        "--check",
        action="store_true",
        help="print the problems of the choreography instead (exit 1 if any)",
    )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)

    try:
        graph = build_graph(describe_services(SERVICES))
    except RegistryUnavailable as exc:
        sys.stderr.write(f"saga graph: {exc}\n")
        return 2
    if args.check:
        # Notices (MessageRetried, MessageParked) have contracts but are not choreography.
        contracts = json.loads(CONTRACTS_FILE.read_text())
        contract_events = set(contracts["events"]) - NOTICE_EVENTS
        found = problems(graph, contract_events=contract_events, contract_producers=contracts["producers"])
        for problem in found:
            sys.stdout.write(f"{problem}\n")
        if found:
            sys.stderr.write(f"saga graph: {len(found)} problem(s) in the choreography\n")
            return 1
        sys.stdout.write(
            f"saga graph: no problems ({len(graph.services)} services, {len(graph.event_types)} events)\n"
        )
        return 0
    sys.stdout.write(to_mermaid(graph) if args.format == "mermaid" else to_json(graph) + "\n")
    return 0
