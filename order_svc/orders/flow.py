"""The Order service's own figures on the saga map: its orders by status, per minute of creation.

A minute's counts change while its orders are open, so each pass of the roll-up
(common/messaging/flow.py) recounts, besides the recent minutes, every minute that still
has an open order or that the table still counts one in (it closed since). Each recount
reads one minute of orders through the ``created_at`` index; the open orders are found
through ``order_open_deadline``, a partial index that holds only them.
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
    f" UNION SELECT date_trunc('minute', created_at) FROM {ORDERS} WHERE status = ANY(%(open)s)"
    f" UNION SELECT minute FROM {FLOW} WHERE kind = %(kind)s AND name = ANY(%(open)s)"
    " ON CONFLICT DO NOTHING"
)
_FORGET = f"DELETE FROM {FLOW} f USING flow_recount r WHERE f.kind = %(kind)s AND f.minute = r.minute"
_COUNT = (
    f"INSERT INTO {FLOW} (minute, kind, producer, name, count, attempts)"
    " SELECT r.minute, %(kind)s, '', o.status, count(*), 0"
    f" FROM flow_recount r JOIN {ORDERS} o"
    " ON o.created_at >= r.minute AND o.created_at < r.minute + interval '1 minute'"
    " GROUP BY 1, 4"
)


def roll_orders(cursor: Any, since: datetime, until: datetime) -> None:
    params = {"since": since, "until": until, "open": _OPEN, "kind": KIND}
    for sql in (_MINUTES, _RECOUNT, _FORGET, _COUNT):
        cursor.execute(sql, params)


SOURCE = Source(KIND, roll_orders)
