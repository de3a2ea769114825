"""The Inventory service's hot SQL, as named statements prepared once per connection
(common/messaging/statements.py). Stock changes are version-checked: see services.py."""

from __future__ import annotations

from common.messaging.sagas import CANCELLED_SQL
from common.messaging.statements import Statement
from inventory_svc.inventory.models import Product, Reservation

PRODUCTS = Product._meta.db_table
RESERVATIONS = Reservation._meta.db_table

# Before reserving: does the order hold reservations already, was it cancelled?
reserve_facts = Statement(
    "reserve_facts",
    f"SELECT EXISTS (SELECT 1 FROM {RESERVATIONS} WHERE order_id = %s), {CANCELLED_SQL}",
    ("uuid", "uuid"),
)

has_reservations = Statement(
    "has_reservations", f"SELECT EXISTS (SELECT 1 FROM {RESERVATIONS} WHERE order_id = %s)", ("uuid",)
)

products_read = Statement(
    "products_read",
    f"SELECT sku, available, price, version FROM {PRODUCTS} WHERE sku = ANY(%s) ORDER BY sku",
    ("text[]",),
)

# The optimistic check, for every product a step changes at once: a row whose version moved
# on is not updated (fewer rows than changes). The products are locked in sku order first,
# as the lines were one UPDATE each in sku order before, so that two transactions changing
# the same products never wait on each other in a cycle, whatever join the plan picks.
products_apply = Statement(
    "products_apply",
    "WITH change AS (SELECT * FROM unnest(%s, %s, %s, %s) AS c(sku, available, reserved, version)),"
    f" locked AS MATERIALIZED (SELECT sku FROM {PRODUCTS} WHERE sku IN (SELECT sku FROM change)"
    " ORDER BY sku FOR NO KEY UPDATE)"
    f" UPDATE {PRODUCTS} AS p SET available = p.available + change.available,"
    " reserved = p.reserved + change.reserved, version = p.version + 1, updated_at = now()"
    " FROM change JOIN locked ON locked.sku = change.sku"
    " WHERE p.sku = change.sku AND p.version = change.version",
    ("text[]", "integer[]", "integer[]", "integer[]"),
)

reservations_insert = Statement(
    "reservations_insert",
    f"INSERT INTO {RESERVATIONS}"
    " (id, order_id, product_id, quantity, unit_price, status, created_at, updated_at)"
    " SELECT line.id, %s, line.sku, line.quantity, line.price, %s, now(), now()"
    " FROM unnest(%s, %s, %s, %s) AS line(id, sku, quantity, price)",
    ("uuid", "text", "uuid[]", "text[]", "integer[]", "numeric[]"),
)

# An order's reservations in one status, with their products, in sku order.
reservations_read = Statement(
    "reservations_read",
    "SELECT r.id, r.quantity, p.sku, p.available, p.price, p.version"
    f" FROM {RESERVATIONS} r JOIN {PRODUCTS} p ON p.sku = r.product_id"
    " WHERE r.order_id = %s AND r.status = %s ORDER BY p.sku",
    ("uuid", "text"),
)

reservations_settle = Statement(
    "reservations_settle",
    f"UPDATE {RESERVATIONS} SET status = %s, updated_at = now() WHERE id = ANY(%s)",
    ("text", "uuid[]"),
)

# A group-commit batch's products, locked in sku order before any handler runs.
products_lock = Statement(
    "products_lock",
    # One array of skus, so that the products are found through their index: with
    # "sku = ANY(…) OR sku IN (…)" the generic plan scanned every product (1.5 ms a batch
    # with 5 000 products, and growing with the catalogue).
    f"SELECT sku FROM {PRODUCTS} WHERE sku = ANY(%s"
    f" || ARRAY(SELECT product_id::text FROM {RESERVATIONS} WHERE order_id = ANY(%s)))"
    " ORDER BY sku FOR NO KEY UPDATE",
    ("text[]", "uuid[]"),
)
