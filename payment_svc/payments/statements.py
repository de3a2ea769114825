"""The Payment service's hot SQL, as named statements prepared once per connection
(common/messaging/statements.py). Money moves with conditional UPDATEs: see services.py."""

from __future__ import annotations

from common.messaging.sagas import CANCELLED_SQL
from common.messaging.statements import Statement
from payment_svc.payments.models import Account, Payment

ACCOUNTS = Account._meta.db_table
PAYMENTS = Payment._meta.db_table

# Whether the order has a payment of a kind (parameters: order id, kind).
PAID_SQL = f"EXISTS (SELECT 1 FROM {PAYMENTS} WHERE order_id = %s AND kind = %s)"

# Before charging: charged before? cancelled? a known customer?
charge_facts = Statement(
    "charge_facts",
    f"SELECT {PAID_SQL}, {CANCELLED_SQL}, EXISTS (SELECT 1 FROM {ACCOUNTS} WHERE customer_id = %s)",
    ("uuid", "text", "uuid", "text"),
)

# Debit only if the balance covers it, and record the charge, in one statement.
account_charge = Statement(
    "account_charge",
    f"WITH debited AS (UPDATE {ACCOUNTS} SET balance = balance - %s, updated_at = now()"
    " WHERE customer_id = %s AND balance >= %s RETURNING customer_id)"
    f" INSERT INTO {PAYMENTS} (id, order_id, customer_id, kind, amount, created_at)"
    " SELECT %s, %s, customer_id, %s, %s, now() FROM debited",
    ("numeric", "text", "numeric", "uuid", "uuid", "text", "numeric"),
)

# The order's charge, and whether it was refunded.
charge_read = Statement(
    "charge_read",
    f"SELECT customer_id, amount, {PAID_SQL} FROM {PAYMENTS} WHERE order_id = %s AND kind = %s",
    ("uuid", "text", "uuid", "text"),
)

account_credit = Statement(
    "account_credit",
    f"UPDATE {ACCOUNTS} SET balance = balance + %s, updated_at = now() WHERE customer_id = %s",
    ("numeric", "text"),
)

payment_insert = Statement(
    "payment_insert",
    f"INSERT INTO {PAYMENTS} (id, order_id, customer_id, kind, amount, created_at)"
    " VALUES (%s, %s, %s, %s, %s, now())",
    ("uuid", "uuid", "text", "text", "numeric"),
)

# A group-commit batch's accounts, locked in customer order before any handler runs.
accounts_lock = Statement(
    "accounts_lock",
    # One array of customers, found through the accounts' index (an OR of the two made the
    # generic plan scan every account: inventory's products_lock says more).
    f"SELECT customer_id FROM {ACCOUNTS} WHERE customer_id = ANY(%s || ARRAY("
    f"SELECT customer_id::text FROM {PAYMENTS} WHERE order_id = ANY(%s) AND kind = %s))"
    " ORDER BY customer_id FOR NO KEY UPDATE",
    ("text[]", "uuid[]", "text"),
)
