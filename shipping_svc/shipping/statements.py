"""The Shipping service's hot SQL, as named statements prepared once per connection
(common/messaging/statements.py)."""

from __future__ import annotations

from common.messaging.sagas import CANCELLED_SQL
from common.messaging.statements import Statement
from shipping_svc.shipping.models import Destination, Shipment

DESTINATIONS = Destination._meta.db_table
SHIPMENTS = Shipment._meta.db_table

# Once per order (a duplicate changes nothing).
destination_insert = Statement(
    "destination_insert",
    f"INSERT INTO {DESTINATIONS} (order_id, country, address, created_at)"
    " VALUES (%s, %s, %s, now()) ON CONFLICT DO NOTHING",
    ("uuid", "text", "jsonb"),
)

# Before scheduling: scheduled before? cancelled? (and, for a PaymentCompleted from before
# the upgrade, which carries no address: where to, as recorded from OrderPlaced?)
schedule_facts = Statement(
    "schedule_facts",
    f"SELECT EXISTS (SELECT 1 FROM {SHIPMENTS} WHERE order_id = %s), {CANCELLED_SQL}",
    ("uuid", "uuid"),
)
schedule_facts_recorded = Statement(
    "schedule_facts_recorded",
    f"SELECT EXISTS (SELECT 1 FROM {SHIPMENTS} WHERE order_id = %s), {CANCELLED_SQL},"
    f" (SELECT country FROM {DESTINATIONS} WHERE order_id = %s)",
    ("uuid", "uuid", "uuid"),
)

shipment_insert = Statement(
    "shipment_insert",
    f"INSERT INTO {SHIPMENTS} (id, order_id, status, country, created_at, updated_at)"
    " VALUES (%s, %s, %s, %s, now(), now())",
    ("uuid", "uuid", "text", "text"),
)

shipment_read = Statement(
    "shipment_read", f"SELECT id, status FROM {SHIPMENTS} WHERE order_id = %s", ("uuid",)
)

shipment_set_status = Statement(
    "shipment_set_status",
    f"UPDATE {SHIPMENTS} SET status = %s, updated_at = now() WHERE id = %s",
    ("text", "uuid"),
)
