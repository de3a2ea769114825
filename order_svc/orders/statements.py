"""The Order service's hot SQL, as named statements prepared once per connection
(common/messaging/statements.py). Each runs for every saga (or every event of one)."""

from __future__ import annotations

from common.messaging.statements import Statement
from order_svc.orders.models import Order, OrderLine, SagaEvent

ORDERS = Order._meta.db_table
LINES = OrderLine._meta.db_table
TIMELINE = SagaEvent._meta.db_table

# What a saga step may change on an order (saved without rewriting the rest of the row).
SAGA_FIELDS = (
    "status",
    "failure_reason",
    "total",
    "compensations_expected",
    "compensations_confirmed",
    "finished_at",
    "updated_at",
)

# What a saga step reads of the order it locks (by name, not "*": a prepared "SELECT *"
# fails once a migration adds a column). The rest of the row stays unread (deferred).
# (In the model's field order, as Model.from_db reads them.)
LOCKED_FIELDS = tuple(
    field.column
    for field in Order._meta.concrete_fields
    if field.name not in ("shipping_address", "idempotency_key", "request_fingerprint")
)
ALL_FIELDS = tuple(field.column for field in Order._meta.concrete_fields)

# An order as the API shows it: the row, its lines, its timeline (in the models' orderings).
order_read = Statement("order_read", f"SELECT {', '.join(ALL_FIELDS)} FROM {ORDERS} WHERE id = %s", ("uuid",))
lines_read = Statement(
    "lines_read", f"SELECT sku, quantity, unit_price FROM {LINES} WHERE order_id = %s ORDER BY sku", ("uuid",)
)
timeline_read = Statement(
    "timeline_read",
    f"SELECT event_type, service, occurred_at, event_id FROM {TIMELINE} WHERE order_id = %s"
    " ORDER BY occurred_at, id",
    ("uuid",),
)

order_lock = Statement(
    "order_lock", f"SELECT {', '.join(LOCKED_FIELDS)} FROM {ORDERS} WHERE id = %s FOR UPDATE", ("uuid",)
)

# A new order (POST /api/orders/): the row, then its lines.
order_insert = Statement(
    "order_insert",
    f"INSERT INTO {ORDERS} (id, customer_id, status, failure_reason, total, shipping_address,"
    " idempotency_key, request_fingerprint, compensations_expected, compensations_confirmed,"
    " trace_context, deadline_at, created_at, updated_at, finished_at)"
    " VALUES (%s, %s, %s, '', NULL, %s, %s, %s, '[]', '[]', %s, %s, %s, %s, NULL)",
    ("uuid", "text", "text", "jsonb", "text", "text", "jsonb", "timestamptz", "timestamptz", "timestamptz"),
)

lines_insert = Statement(
    "lines_insert",
    f"INSERT INTO {LINES} (order_id, sku, quantity, unit_price)"
    " SELECT %s, line.sku, line.quantity, NULL FROM unnest(%s, %s) AS line(sku, quantity)",
    ("uuid", "text[]", "integer[]"),
)

order_save = Statement(
    "order_save",
    f"UPDATE {ORDERS} SET " + ", ".join(f"{name} = %s" for name in SAGA_FIELDS) + " WHERE id = %s",
    ("varchar", "text", "numeric", "jsonb", "jsonb", "timestamptz", "timestamptz", "uuid"),
)

lines_price = Statement(
    "lines_price",
    f"UPDATE {LINES} AS line SET unit_price = priced.price"
    " FROM unnest(%s, %s) AS priced(sku, price)"
    " WHERE line.order_id = %s AND line.sku = priced.sku",
    ("varchar[]", "numeric[]", "uuid"),
)

# Timeline rows in one statement; it returns the event ids whose order does not exist.
timeline_write = Statement(
    "timeline_write",
    "WITH input AS (SELECT * FROM unnest(%s, %s, %s, %s, %s, %s, %s)"
    " AS t(order_id, event_id, event_type, service, occurred_at, causation_id, payload)),"
    f" written AS (INSERT INTO {TIMELINE}"
    " (order_id, event_id, event_type, service, occurred_at, recorded_at, causation_id, payload)"
    " SELECT i.order_id, i.event_id, i.event_type, i.service, i.occurred_at, now(), i.causation_id, i.payload"
    f" FROM input i JOIN {ORDERS} o ON o.id = i.order_id"
    " ON CONFLICT (event_id) DO NOTHING)"
    f" SELECT i.event_id FROM input i WHERE NOT EXISTS (SELECT 1 FROM {ORDERS} o WHERE o.id = i.order_id)",
    ("uuid[]", "uuid[]", "text[]", "text[]", "timestamptz[]", "uuid[]", "jsonb[]"),
)
