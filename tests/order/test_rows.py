"""insert_rows writes what the ORM's create would, with one plain statement."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.forms.models import model_to_dict
from django.utils import timezone

from common.rows import insert_rows
from order_svc.orders.models import Order, OrderLine


def _order(**extra) -> Order:
    now = timezone.now()
    return Order(
        customer_id="alice",
        shipping_address={"country": "FR", "lines": ["1 rue de la Paix", "Ünïcode ✓"]},
        request_fingerprint="f" * 64,
        deadline_at=now + timedelta(seconds=30),
        created_at=now,
        trace_context={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
        **extra,
    )


@pytest.mark.django_db
def test_insert_rows_stores_what_create_stores() -> None:
    by_orm = _order(idempotency_key="k-orm")
    by_orm.save(force_insert=True)
    ours = _order(idempotency_key="k-rows")
    insert_rows([ours])
    assert ours._state.adding is False
    stored_orm, stored_ours = Order.objects.get(id=by_orm.id), Order.objects.get(id=ours.id)
    skip = {"id", "idempotency_key", "created_at", "deadline_at"}
    assert {k: v for k, v in model_to_dict(stored_ours).items() if k not in skip} == {
        k: v for k, v in model_to_dict(stored_orm).items() if k not in skip
    }
    # Defaults (status, JSON lists), auto_now and the JSON round trip came out right.
    assert stored_ours.status == "PENDING"
    assert stored_ours.compensations_expected == [] == stored_ours.compensations_confirmed
    assert stored_ours.shipping_address == ours.shipping_address
    assert stored_ours.updated_at is not None
    assert stored_ours.id.version == 7


@pytest.mark.django_db
def test_insert_rows_returns_auto_keys_in_order_and_keeps_constraints() -> None:
    order = _order()
    insert_rows([order])
    lines = [OrderLine(order=order, sku=sku, quantity=n) for n, sku in enumerate(["a", "b", "c"], start=1)]
    insert_rows(lines)
    assert all(line.pk is not None for line in lines)
    assert {line.pk: (line.sku, line.quantity) for line in lines} == {
        pk: (sku, quantity) for pk, sku, quantity in OrderLine.objects.values_list("pk", "sku", "quantity")
    }
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_rows([OrderLine(order=order, sku="a", quantity=9)])  # (order, sku) is unique
    insert_rows([])  # nothing to do, no statement
