"""Hostile messages straight to the broker: forged events and fuzzed bodies.

Whoever can publish to RabbitMQ (a compromised service, a leaked password, a buggy
tool) must not be able to move a saga: only events signed by a producer allowed to emit
their type are handled (common/messaging/signing.py); everything else ends in the receiving
service's parking lot with a reason, and no worker stops.
"""

from __future__ import annotations

import json
import random
import uuid

import pytest
from amqp.exceptions import AccessRefused
from kombu import Connection

from common.messaging.envelope import Envelope
from common.messaging.signing import SIGNATURE_HEADER, signature_of
from common.services import SERVICES
from tests.support import BROKER_URL, Api, ctl, manage, parked, poll, publish, rabbitmqctl, signature, sql


def discard(service: str, ids: list[int], note: str) -> None:
    if ids:
        manage(service, "parked", "discard", *map(str, ids), "--operator", "e2e-test", "--note", note)


def worker_pids() -> dict[str, str]:
    status = ctl("status", check=False).stdout.splitlines()
    return {
        line.split()[0]: line.split("pid")[1].split(",")[0].strip() for line in status if "-worker" in line
    }


def test_a_forged_payment_completed_ships_nothing(api: Api) -> None:
    sku = api.product(price="4.00", available=5)
    customer = api.account(balance="100.00")
    ctl("stop", "payment-worker:*")  # the real payment step waits: only forgeries can "pay"
    try:
        order_id = api.place(customer, [(sku, 1)])["id"]
        poll(
            lambda: api.order(order_id),
            lambda order: order["total"] is not None,
            timeout=15,
            what="inventory to reserve (and price) the order",
        )

        def forged(producer: str) -> bytes:
            payload = {"customer_id": customer, "amount": "4.00"}
            return (
                Envelope(event_type="PaymentCompleted", saga_id=order_id, producer=producer, payload=payload)
                .to_json()
                .encode()
            )

        attacks = {
            "unsigned": (forged("payment"), None),
            "a guessed key": (forged("payment"), lambda body: signature_of(body, b"guess")),
            "inventory's key, claiming to be payment": (
                forged("payment"),
                lambda body: signature("inventory", body),
            ),
            "inventory, signing as itself": (forged("inventory"), lambda body: signature("inventory", body)),
        }
        for body, sign in attacks.values():
            publish("payment.completed", body, headers={SIGNATURE_HEADER: sign(body)} if sign else {})
        expected = [
            "untrusted event: unsigned event",
            "untrusted event: bad signature",
            "untrusted event: bad signature",
            "untrusted event: producer 'inventory' may not emit PaymentCompleted",
        ]
        for service in ("shipping", "order"):  # both consume PaymentCompleted
            found = poll(
                lambda service=service: [
                    m for m in parked(service, order_id) if m["event_type"] == "PaymentCompleted"
                ],
                lambda found: len(found) == len(attacks),
                timeout=20,
                what=f"{service} to park the {len(attacks)} forgeries",
            )
            reasons = sorted(m["reason"] for m in found)
            assert all(r.startswith(e) for r, e in zip(reasons, sorted(expected), strict=True)), reasons
        assert api.shipments(order_id) == []
        order = api.order(order_id)
        assert order["status"] == "PENDING"
        assert "PaymentCompleted" not in [step["event_type"] for step in order["timeline"]]
    finally:
        ctl("start", "payment-worker:*")
    final = api.wait_terminal(order_id)
    assert final["status"] == "COMPLETED", final  # the genuine payment, once the worker is back
    assert len(api.shipments(order_id)) == 1
    assert [s["service"] for s in final["timeline"] if s["event_type"] == "PaymentCompleted"] == ["payment"]
    for service in ("shipping", "order"):
        discard(service, [m["id"] for m in parked(service, order_id)], "forgeries published by the test")


def hostile_bodies(service: str, rng: random.Random) -> list[bytes]:
    """Truncated, corrupted, oversized, nested and ill-typed bodies for ``service``'s queue."""
    event_type = {
        "order": "InventoryReserved",
        "payment": "InventoryReserved",
        "inventory": "OrderPlaced",
        "shipping": "PaymentCompleted",
    }[service]
    valid = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "saga_id": str(uuid.uuid4()),
        "occurred_at": "2026-11-26T08:00:00+00:00",
        "producer": "x",
        "causation_id": None,
        "trace": {},
        "schema_version": 1,
        "payload": {"customer_id": "c", "total": "1.00", "lines": [], "amount": "1.00", "items": []},
    }
    whole = json.dumps(valid).encode()
    return [
        *(whole[:cut] for cut in (0, 1, len(whole) // 3, len(whole) // 2, len(whole) - 1)),
        *(rng.randbytes(rng.randint(1, 400)) for _ in range(3)),
        whole.replace(b'"1.00"', b'"\xff\xfe"', 1),
        b"[" * 100_000,
        b'{"a":' * 100_000,
        whole.replace(b'"schema_version": 1', b'"schema_version": NaN'),
        json.dumps({**valid, "schema_version": 99}).encode(),
        json.dumps({**valid, "payload": ["not", "an", "object"]}).encode(),
        json.dumps({**valid, "payload": {"total": 1e308}}).encode(),
        json.dumps({**valid, "padding": "x" * 300_000}).encode(),
        b"null",
    ]


def test_fuzzed_and_truncated_bodies_are_parked_with_a_reason_and_no_worker_stops(api: Api) -> None:
    pids = worker_pids()
    marker = uuid.uuid4().hex
    rng = random.Random(marker)
    sent, saga_ids = {}, set()
    for service in SERVICES:
        bodies = hostile_bodies(service, rng)
        for i, body in enumerate(bodies):
            publish(f"{service}.events", body, exchange="", headers={"x-fuzz": f"{marker}-{i}"})
        sent[service] = len(bodies)
    for service, count in sent.items():
        found = poll(
            lambda service=service: [
                m
                for m in json.loads(manage(service, "parked", "list", "--json"))
                if str(m["headers"].get("x-fuzz", "")).startswith(marker)
            ],
            lambda found, count=count: len(found) == count,
            timeout=30,
            what=f"{service} to park all {count} hostile bodies",
        )
        assert all(m["reason"].startswith(("malformed event: ", "untrusted event: ")) for m in found), [
            m["reason"] for m in found
        ]
        discard(service, [m["id"] for m in found], "fuzzed bodies published by the test")
        saga_ids |= {m["saga_id"] for m in found if m["saga_id"]}
    # A parked body that carried a (made-up) saga id is announced to the order service as
    # MessageParked; it names no order, so it is absorbed, not parked in its turn.
    assert saga_ids  # some bodies were readable enough to name one
    ids = ", ".join(f"'{saga_id}'" for saga_id in sorted(saga_ids))
    notices = f"event_type = 'MessageParked' AND saga_id IN ({ids})"
    announced = sum(  # written with the parked rows, in the same transactions
        int(sql(f"SELECT count(*) FROM messaging_outbox WHERE {notices}", database=f"saga_{service}"))
        for service in SERVICES
    )
    assert announced
    poll(
        lambda: int(sql(f"SELECT count(*) FROM messaging_inbox WHERE {notices}", database="saga_order")),
        lambda absorbed: absorbed == announced,
        timeout=20,
        what=f"the order service to absorb the {announced} MessageParked notices",
    )
    assert [
        m for m in json.loads(manage("order", "parked", "list", "--json")) if m["saga_id"] in saga_ids
    ] == []
    assert worker_pids() == pids  # no worker died or was restarted
    sku = api.product(available=1)
    order = api.place(api.account(), [(sku, 1)])
    assert api.wait_terminal(order["id"])["status"] == "COMPLETED"


def service_broker(service: str) -> str:
    """The URL ``service`` connects with (its own user; development password)."""
    return BROKER_URL.replace("saga:saga@", f"saga_{service}:saga_{service}@", 1)


def test_a_service_cannot_read_another_services_queue() -> None:
    """Least privilege: payment's user may consume payment's queues, not shipping's."""
    with Connection(service_broker("payment")) as conn:
        channel = conn.channel()
        channel.basic_get(queue="payment.parked")  # its own queue: allowed (a control)
        with pytest.raises(AccessRefused, match="shipping.events"):
            conn.channel().basic_get(queue="shipping.events")
    with Connection(service_broker("payment")) as conn, pytest.raises(AccessRefused):
        conn.channel().queue_purge("shipping.events")
    # Nor can a service bind a queue of its own to another service's exchange.
    with Connection(service_broker("shipping")) as conn, pytest.raises(AccessRefused):
        conn.channel().queue_bind("shipping.parked", exchange="payment.parked", routing_key="")


def test_the_services_connect_as_their_own_users() -> None:
    users = {line.split()[0] for line in rabbitmqctl("-q", "list_connections", "user").splitlines()[1:]}
    assert {f"saga_{service}" for service in SERVICES} <= users, users


def test_a_compromised_service_can_publish_but_not_forge_another_producer(api: Api) -> None:
    """Inventory's own user and key can reach saga.events, yet its PaymentCompleted is parked."""
    sku = api.product(price="1.00", available=1)
    customer = api.account(balance="0.00")  # the real payment declines: the order ends CANCELLED
    order_id = api.place(customer, [(sku, 1)])["id"]
    forged = (
        Envelope(
            event_type="PaymentCompleted",
            saga_id=order_id,
            producer="inventory",
            payload={"customer_id": customer, "amount": "1.00"},
        )
        .to_json()
        .encode()
    )
    publish("payment.completed", forged, signed_by="inventory", broker=service_broker("inventory"))
    found = poll(
        lambda: [m for m in parked("shipping", order_id) if m["event_type"] == "PaymentCompleted"],
        lambda found: len(found) == 1,
        timeout=20,
        what="shipping to park inventory's forgery",
    )
    assert found[0]["reason"].startswith(
        "untrusted event: producer 'inventory' may not emit PaymentCompleted"
    )
    assert api.wait_terminal(order_id)["status"] == "CANCELLED"
    assert api.shipments(order_id) == []
    for service in ("shipping", "order"):
        poll(
            lambda service=service: parked(service, order_id),
            lambda found: len(found) == 1,
            timeout=20,
            what=f"{service} to park the forgery",
        )
        discard(service, [m["id"] for m in parked(service, order_id)], "forgery published by the test")


@pytest.mark.parametrize(
    ("role", "database"), [("saga_payment", "saga_order"), ("saga_shipping", "saga_payment")]
)
def test_a_service_cannot_open_another_services_database(role: str, database: str) -> None:
    """Each service's PostgreSQL role owns its database; CONNECT to the others is revoked."""
    import psycopg2

    login = {"user": role, "password": role, "host": "127.0.0.1", "connect_timeout": 5}
    psycopg2.connect(dbname=role, **login).close()  # its own: allowed (a control)
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        psycopg2.connect(dbname=database, **login)
