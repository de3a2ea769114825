"""The Order service's own figures on the saga map: its orders by status, per minute of creation.

A minute's counts change only while it holds open orders (terminal states are final). So
each pass of the roll-up (common/messaging/flow.py) recounts the recent minutes (new
orders) and the minutes whose open orders changed: their open orders are counted through
``order_open_deadline`` (a partial index holding only the open orders, so this stays cheap
with millions of closed ones) and compared with what the table holds; where the two
differ, an order moved on and that minute is counted again, through the ``created_at``
index. A minute whose open orders stay open (stuck sagas) costs nothing after its first count.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from common.messaging.flow import FLOW, Source
from order_svc.orders.models import OPEN_STATUSES, Order

KIND = "orders"
ORDERS = Order._meta.db_table
_OPEN = [str(status) for status in OPEN_STATUSES]

_MINUTES = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS flow_recount (minute timestamptz PRIMARY KEY) ON COMMIT DELETE ROWS"
)
_RECOUNT = (
    "INSERT INTO flow_recount"
    " SELECT generate_series(%(since)s, %(until)s - interval '1 minute', interval '1 minute')"
    " UNION SELECT minute FROM"
    f" (SELECT date_trunc('minute', created_at) AS minute, status AS name, count(*) AS count FROM {ORDERS}"
    "   WHERE status = ANY(%(open)s) GROUP BY 1, 2) AS open_now"
    f" FULL JOIN (SELECT minute, name, count FROM {FLOW} WHERE kind = %(kind)s AND name = ANY(%(open)s))"
    "   AS counted USING (minute, name)"
    " WHERE open_now.count IS DISTINCT FROM counted.count"
    " ON CONFLICT DO NOTHING"
)
_FORGET = f"DELETE FROM {FLOW} f USING flow_recount r WHERE f.kind = %(kind)s AND f.minute = r.minute"
_COUNT = (
    f"INSERT INTO {FLOW} (minute, kind, producer, name, count, attempts)"
    " SELECT r.minute, %(kind)s, '', o.status, count(*), 0"
    # LATERAL: one range of the created_at index per minute (the temporary table has no
    # statistics: a plain join was planned as a scan of every order)
    f" FROM flow_recount r CROSS JOIN LATERAL (SELECT status FROM {ORDERS}"
    "   WHERE created_at >= r.minute AND created_at < r.minute + interval '1 minute') AS o"
    " GROUP BY 1, 4"
)


def roll_orders(cursor: Any, since: datetime, until: datetime) -> None:
    params = {"since": since, "until": until, "open": _OPEN, "kind": KIND}
    for sql in (_MINUTES, _RECOUNT, "ANALYZE flow_recount", _FORGET, _COUNT):
        cursor.execute(sql, params)


SOURCE = Source(KIND, roll_orders)
