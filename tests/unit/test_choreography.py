"""The choreography graph (tools/choreography.py): built from registry descriptions.

The pure functions are fed a small hand-made saga (order → stock → pay), sound as
given, and broken copies of it; the last two tests run the real ``./manage.py saga
graph`` (one subprocess per service, no database or broker needed).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tools.choreography import build_graph, problems, to_json, to_mermaid

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

Description = dict[str, Any]


def handles(event_type: str, *emits: str, compensates: str | None = None) -> dict[str, Any]:
    return {"event_type": event_type, "emits": list(emits), "compensates": compensates}


def sound_saga() -> list[Description]:
    """Order places; stock reserves; pay charges or declines; a cancellation undoes both."""
    return [
        {
            "service": "order",
            "originates": [
                {"event_type": "OrderCancelled", "by": "POST /cancel/"},
                {"event_type": "OrderPlaced", "by": "POST /orders/"},
            ],
            "consumes": [
                handles("PaymentCompleted"),
                handles("PaymentDeclined"),
                handles("PaymentRefunded"),
                handles("StockRejected"),
                handles("StockReleased"),
            ],
        },
        {
            "service": "stock",
            "originates": [],
            "consumes": [
                handles("OrderCancelled", "StockReleased", compensates="StockReserved"),
                handles("OrderPlaced", "StockReserved", "StockRejected"),
                handles("PaymentDeclined", "StockReleased", compensates="StockReserved"),
            ],
        },
        {
            "service": "pay",
            "originates": [],
            "consumes": [
                handles("OrderCancelled", "PaymentRefunded", compensates="PaymentCompleted"),
                handles("StockReserved", "PaymentCompleted", "PaymentDeclined"),
            ],
        },
    ]


EVENTS = {
    "OrderPlaced",
    "OrderCancelled",
    "StockReserved",
    "StockRejected",
    "StockReleased",
    "PaymentCompleted",
    "PaymentDeclined",
    "PaymentRefunded",
}


def service(descriptions: list[Description], name: str) -> Description:
    return next(d for d in descriptions if d["service"] == name)


def without(descriptions: list[Description], name: str, event_type: str) -> list[Description]:
    """The saga without ``name``'s handler of ``event_type``."""
    consumes = service(descriptions, name)["consumes"]
    consumes[:] = [c for c in consumes if c["event_type"] != event_type]
    return descriptions


def test_a_sound_saga_has_no_problems() -> None:
    assert problems(build_graph(sound_saga()), contract_events=EVENTS) == []


def test_edges_join_each_consumer_to_the_producers_of_its_event() -> None:
    graph = build_graph(sound_saga())
    assert graph.services == ("order", "pay", "stock")
    assert graph.producers["StockReleased"] == {"stock"}
    assert graph.producers["OrderPlaced"] == {"order"}
    edges = {(e.producer, e.event_type, e.consumer, e.compensates) for e in graph.edges}
    assert ("order", "OrderPlaced", "stock", None) in edges
    assert ("pay", "PaymentDeclined", "stock", "StockReserved") in edges
    assert ("order", "OrderCancelled", "pay", "PaymentCompleted") in edges
    assert len(edges) == len(graph.edges) == 10


def test_mermaid_draws_services_origins_and_dashed_compensations_in_a_fixed_order() -> None:
    expected = """\
flowchart LR
    origin1(["POST /cancel/"])
    origin2(["POST /orders/"])
    Order
    Pay
    Stock
    origin1 -- OrderCancelled --> Order
    origin2 -- OrderPlaced --> Order
    Order -- OrderPlaced --> Stock
    Stock -- StockRejected --> Order
    Stock -- StockReserved --> Pay
    Pay -- PaymentCompleted --> Order
    Pay -- PaymentDeclined --> Order
    Order -. "OrderCancelled (undoes PaymentCompleted)" .-> Pay
    Order -. "OrderCancelled (undoes StockReserved)" .-> Stock
    Pay -. "PaymentDeclined (undoes StockReserved)" .-> Stock
    Pay -- PaymentRefunded --> Order
    Stock -- StockReleased --> Order
"""
    assert to_mermaid(build_graph(sound_saga())) == expected
    shuffled = sound_saga()
    random.Random(7).shuffle(shuffled)
    for description in shuffled:
        random.Random(7).shuffle(description["consumes"])
    assert to_mermaid(build_graph(shuffled)) == expected


def test_mermaid_labels_are_quoted() -> None:
    descriptions = sound_saga()
    service(descriptions, "order")["originates"][0]["by"] = 'the "cancel" button'
    assert '(["the #quot;cancel#quot; button"])' in to_mermaid(build_graph(descriptions))


def test_json_lists_the_edges() -> None:
    data = json.loads(to_json(build_graph(sound_saga())))
    assert data["services"] == ["order", "pay", "stock"]
    assert {
        "producer": "pay",
        "event_type": "PaymentDeclined",
        "consumer": "stock",
        "compensates": "StockReserved",
    } in data["edges"]


def _compensating(name: str, index: int, compensates: str | None) -> Any:
    def mutate(descriptions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        service(descriptions, name)["consumes"][index]["compensates"] = compensates
        return descriptions

    return mutate


def _handling(*handlers: tuple[str, dict[str, Any]]) -> Any:
    def mutate(descriptions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for name, handler in handlers:
            service(descriptions, name)["consumes"].append(handler)
        return descriptions

    return mutate


NOT_UNDONE = (
    "stock emits StockReserved and PaymentDeclined can follow it, "
    "but stock has no handler for PaymentDeclined that compensates StockReserved"
)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            lambda d: without(d, "order", "StockRejected"),
            ["StockRejected is emitted by stock but no service consumes it"],
            id="an event no service consumes",
        ),
        pytest.param(
            _handling(
                ("order", handles("PaymentExpired")), ("stock", handles("PaymentExpired", "StockReleased"))
            ),
            ["order, stock handles PaymentExpired but no service emits it"],
            id="a handler of an event no service emits",
        ),
        pytest.param(
            lambda d: without(d, "stock", "PaymentDeclined"),
            [NOT_UNDONE],
            id="a forward step not undone on a later failure",
        ),
        pytest.param(
            _compensating("stock", 2, None),
            [NOT_UNDONE],
            id="a handler of a later failure that compensates nothing",
        ),
        pytest.param(
            # pay emits PaymentCompleted, then (say, on a chargeback) PaymentDeclined itself
            _handling(("pay", handles("PaymentCompleted", "PaymentDeclined"))),
            [],
            id="a failure reported by the step's own service needs no handler",
        ),
        pytest.param(
            _compensating("pay", 0, None),
            [
                "pay handles the cancellation OrderCancelled without `compensates`: "
                "say which of its steps it undoes"
            ],
            id="answering the cancellation without compensating",
        ),
        pytest.param(
            lambda d: without(d, "stock", "OrderCancelled"),
            [
                "stock emits StockReserved, which is compensated, but has no handler for the cancellation "
                "OrderCancelled: a cancelled saga would keep it"
            ],
            id="a compensated step whose service ignores the cancellation",
        ),
        pytest.param(
            _compensating("pay", 0, "StockReserved"),
            [
                "pay compensates StockReserved on OrderCancelled, but StockReserved is emitted by stock: "
                "a service undoes only its own steps"
            ],
            id="compensating another service's step",
        ),
    ],
)
def test_what_is_wrong_with_a_choreography_is_named(mutate: Any, expected: list[str]) -> None:
    assert problems(build_graph(mutate(sound_saga()))) == expected


def test_the_cancellation_event_can_be_named() -> None:
    descriptions = sound_saga()
    assert problems(build_graph(descriptions), cancellation="OrderAbandoned") == [
        "pay emits PaymentCompleted, which is compensated, but has no handler for the cancellation "
        "OrderAbandoned: a cancelled saga would keep it",
        "stock emits StockReserved, which is compensated, but has no handler for the cancellation "
        "OrderAbandoned: a cancelled saga would keep it",
    ]


def test_compensating_an_event_no_one_emits_is_a_problem() -> None:
    descriptions = sound_saga()
    service(descriptions, "pay")["consumes"][0]["compensates"] = "PaymentAuthorised"
    assert (
        "pay compensates PaymentAuthorised on OrderCancelled, but PaymentAuthorised is emitted by "
        "no service: a service undoes only its own steps"
    ) in problems(build_graph(descriptions))


def test_contracts_and_graph_must_name_the_same_events() -> None:
    descriptions = sound_saga()
    service(descriptions, "stock")["consumes"][1]["emits"].append("StockLow")
    service(descriptions, "order")["consumes"].append(handles("StockLow"))
    found = problems(build_graph(descriptions), contract_events=(EVENTS - {"StockRejected"}) | {"OrderPaid"})
    assert found == [
        "OrderPaid has a contract in contracts/events.json but no service emits or consumes it",
        "StockLow (emitted by stock, consumed by order) has no contract in contracts/events.json",
        "StockRejected (emitted by stock, consumed by order) has no contract in contracts/events.json",
    ]


def test_contracts_must_allow_exactly_the_services_that_emit_each_event() -> None:
    """Consumers park an event whose producer the contract does not allow (common/messaging/signing.py)."""
    graph = build_graph(sound_saga())
    allowed = {event_type: sorted(services) for event_type, services in graph.producers.items()}
    assert problems(graph, contract_producers=allowed) == []
    allowed["PaymentCompleted"] = ["stock"]
    del allowed["StockReleased"]
    suffix = ": consumers would park it"
    assert problems(graph, contract_producers=allowed) == [
        "PaymentCompleted is emitted by pay but contracts/events.json allows stock" + suffix,
        "StockReleased is emitted by stock but contracts/events.json allows no producer" + suffix,
    ]


def test_a_service_described_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="two descriptions of the service 'pay'"):
        build_graph([*sound_saga(), service(sound_saga(), "pay")])


def saga(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "saga", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_services_registrations_have_no_problems() -> None:
    done = saga("graph", "--check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readme_saga_diagram_is_the_generated_one() -> None:
    done = saga("graph")
    assert done.returncode == 0, done.stderr
    block = re.search(
        r"<!-- saga-graph:start -->\n```mermaid\n(.*?)```\n<!-- saga-graph:end -->",
        README.read_text(),
        re.DOTALL,
    )
    assert block is not None, "README.md has no ```mermaid block between the saga-graph markers"
    assert block.group(1) == done.stdout, (
        "README.md's saga diagram is out of date: paste the output of ./manage.py saga graph"
    )
