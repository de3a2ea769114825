"""What a service did, minute by minute, for the saga map (the Order admin's home).

The figures come from the service's own rows, never from another service's database:

- **handled**: the inbox (one row per handled event, with its producer, when the producer
  wrote it and how many retry tiers it went through) is rolled up per minute into
  ``messaging_flow``: deliveries, retries and a histogram of the lag from the producer's
  ``occurred_at`` to handling, over :data:`LAG_BOUNDS_MS`.
- other kinds a service registers (:func:`register_source`): the Order service counts its
  orders by status per minute of creation.

The relay (one long-running loop per service) calls :meth:`FlowRollup.roll_if_due` every
``SAGA_FLOW_SECONDS``: it recounts the minutes since a minute before its last run, so rows
committed late (a transaction open across a minute boundary) are counted on the next pass;
recounting is idempotent (an upsert of whole counts), and two relays of one service (the
cluster) take turns through an advisory lock. It also writes the relay's heartbeat. Rows
older than ``SAGA_FLOW_RETENTION_HOURS`` are deleted as it goes.

:func:`report` answers ``GET /api/flow/``: a window's sums per edge (producer, event type),
the parked messages, the outbox backlog, whether the relay beat lately and what the broker
says of the service's queues (consumers, ready messages): each service's part of the map.
Reading a window sums at most one row per minute and edge, so its cost does not grow with
the number of orders.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from common.messaging.broker import broker_connection, registry, topology
from common.messaging.models import FlowMinute, InboxMessage, ParkedMessage, ParkedStatus, ProcessBeat
from common.messaging.outbox import outbox_backlog

log = logging.getLogger("saga.flow")

FLOW = FlowMinute._meta.db_table
INBOX = InboxMessage._meta.db_table
# The lag histogram's upper bounds, in milliseconds; one more bucket holds what is slower.
LAG_BOUNDS_MS: tuple[int, ...] = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000)
# Each pass recounts this far back before its previous one: a handler's transaction takes
# its received_at when it starts and is seen when it commits (statements time out at 10 s).
RECOUNT_SECONDS = 60
CATCH_UP = timedelta(hours=1)  # at most this much per pass (a first run over a big inbox)
ROLLUP_LOCK = 0x5A6A_F10E  # pg_try_advisory_xact_lock: one relay of the service at a time
WINDOWS: dict[str, int] = {"5m": 300, "1h": 3600, "24h": 86400}
RELAY_KIND = "relay"


@dataclass(frozen=True)
class Source:
    """A service's own kind of figure: ``roll(cursor, since, until)`` recounts its minutes."""

    kind: str
    roll: Callable[[Any, datetime, datetime], None]


_sources: dict[str, Source] = {}


def register_source(source: Source) -> None:
    """Called by a service's AppConfig.ready(): its own rows, rolled up with the inbox's."""
    _sources[source.kind] = source


def _lag_bucket_columns(lag: str) -> str:
    """``ARRAY[count(*) FILTER (WHERE lag <= 5), …]``: one non-cumulative count per bucket."""
    bounds = (None, *LAG_BOUNDS_MS, None)

    def bucket(low: int | None, high: int | None) -> str:
        conditions = [f"{lag} > {low}"] * (low is not None) + [f"{lag} <= {high}"] * (high is not None)
        return f"count(*) FILTER (WHERE {' AND '.join(conditions)})"

    parts = [bucket(low, high) for low, high in zip(bounds, bounds[1:], strict=False)]
    return "ARRAY[" + ", ".join(parts) + "]::integer[]"


_ROLL_HANDLED = (
    f"INSERT INTO {FLOW} (minute, kind, producer, name, count, attempts, lag_buckets)"
    " SELECT date_trunc('minute', received_at), 'handled', producer, event_type, count(*), sum(attempts),"
    f" {_lag_bucket_columns('lag')}"
    " FROM (SELECT received_at, producer, event_type, attempts,"
    # (greatest() skips a NULL: a row from before occurred_at was kept has no lag, not 0)
    " CASE WHEN occurred_at IS NOT NULL"
    " THEN greatest(0, extract(epoch FROM received_at - occurred_at) * 1000) END AS lag"
    f" FROM {INBOX} WHERE received_at >= %s AND received_at < %s) AS handled"
    " GROUP BY 1, 3, 4 ORDER BY 1, 3, 4"
    " ON CONFLICT (minute, kind, producer, name) DO UPDATE SET count = EXCLUDED.count,"
    " attempts = EXCLUDED.attempts, lag_buckets = EXCLUDED.lag_buckets"
)


def roll_up(since: datetime, until: datetime | None = None) -> bool:
    """Recount every minute from ``since`` (rounded down) to ``until`` (now); False if another
    relay is doing it."""
    since = since.replace(second=0, microsecond=0)
    until = until or timezone.now() + timedelta(minutes=1)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [ROLLUP_LOCK])
        if not cursor.fetchone()[0]:
            return False
        # Small queries the planner may overestimate (a temporary table has no statistics):
        # compiling them (JIT) cost 170 ms a pass with a million orders, running them 5.
        cursor.execute("SET LOCAL jit = off")
        cursor.execute(_ROLL_HANDLED, [since, until])
        for source in _sources.values():
            source.roll(cursor, since, until)
        cursor.execute(
            f"DELETE FROM {FLOW} WHERE minute < now() - make_interval(hours => %s)",
            [settings.SAGA_FLOW_RETENTION_HOURS],
        )
    return True


def beat(kind: str) -> None:
    """This process is alive (a row per process, ``kind@host:pid``)."""
    name = f"{kind}@{socket.gethostname()}:{os.getpid()}"
    ProcessBeat.objects.update_or_create(name=name, defaults={"kind": kind, "beat_at": timezone.now()})


class FlowRollup:
    """:func:`roll_up` and the relay's heartbeat, from the relay's loop, every ``interval`` s."""

    def __init__(self, *, interval: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = settings.SAGA_FLOW_SECONDS if interval is None else interval
        self._clock = clock
        self._due = 0.0
        self._last_run: datetime | None = None

    def roll_if_due(self) -> bool:
        """Roll up if due; never raises (the relay's job is publishing). True if it ran."""
        if self.interval <= 0 or self._clock() < self._due:
            return False
        self._due = self._clock() + self.interval
        started = timezone.now()
        try:
            since = self._since(started)
            until = min(since + CATCH_UP, started)
            beat(RELAY_KIND)
            roll_up(since, until if until < started else None)
        except Exception:  # noqa: BLE001 - logged; the next pass recounts the same minutes
            log.warning("flow roll-up failed; retrying in %.0fs", self.interval, exc_info=True)
            return False
        self._last_run = until
        if until < started:
            self._due = 0.0  # catching up: the next hour on the next idle cycle
        return True

    def _since(self, now: datetime) -> datetime:
        horizon = now - timedelta(hours=settings.SAGA_FLOW_RETENTION_HOURS)
        if self._last_run is None:  # a new relay: from where the table stops (it was down)
            latest = FlowMinute.objects.filter(kind="handled").order_by("-minute")
            oldest = InboxMessage.objects.order_by("received_at")  # or the first event handled
            start = (
                latest.values_list("minute", flat=True).first()
                or oldest.values_list("received_at", flat=True).first()
                or now
            )
        else:
            start = self._last_run
        return max(horizon, min(start, now) - timedelta(seconds=RECOUNT_SECONDS))


# ------------------------------------------------------------------------------ reading


def percentile(buckets: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0–1) of a :data:`LAG_BOUNDS_MS` histogram, in ms, interpolated
    linearly inside its bucket (as Prometheus's histogram_quantile); None if it is empty.
    The last bucket is open: a quantile that falls in it is reported as its lower bound."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            if index == len(LAG_BOUNDS_MS):
                return float(LAG_BOUNDS_MS[-1])
            low = LAG_BOUNDS_MS[index - 1] if index else 0
            return low + (LAG_BOUNDS_MS[index] - low) * (rank - seen) / count
        seen += count
    return float(LAG_BOUNDS_MS[-1])


def _summed_buckets() -> str:
    return "ARRAY[" + ", ".join(f"sum(lag_buckets[{i}])" for i in range(1, len(LAG_BOUNDS_MS) + 2)) + "]"


def window_since(window_seconds: int) -> datetime:
    return (timezone.now() - timedelta(seconds=window_seconds)).replace(second=0, microsecond=0)


def _edges(cursor: Any, since: datetime) -> list[dict[str, Any]]:
    cursor.execute(
        f"SELECT producer, name, sum(count), sum(attempts), {_summed_buckets()} FROM {FLOW}"
        " WHERE kind = 'handled' AND minute >= %s GROUP BY 1, 2 ORDER BY 1, 2",
        [since],
    )
    edges = []
    for producer, event_type, count, attempts, summed in cursor.fetchall():
        buckets = [int(b or 0) for b in summed]
        edges.append(
            {
                "producer": producer,
                "event_type": event_type,
                "delivered": int(count),
                "retries": int(attempts),
                "lag_p50_ms": percentile(buckets, 0.50),
                "lag_p95_ms": percentile(buckets, 0.95),
            }
        )
    return edges


def _counts(cursor: Any, since: datetime) -> dict[str, dict[str, int]]:
    cursor.execute(
        f"SELECT kind, name, sum(count) FROM {FLOW} WHERE kind <> 'handled' AND minute >= %s GROUP BY 1, 2",
        [since],
    )
    found: dict[str, dict[str, int]] = {}
    for kind, name, count in cursor.fetchall():
        found.setdefault(kind, {})[name] = int(count)
    return found


def _parked(since: datetime) -> dict[str, Any]:
    """Parked in the window (any status since), and open now (PARKED: waiting for a person)."""

    def by_type(rows: Any) -> dict[str, int]:
        counted = rows.order_by().values_list("event_type").annotate(n=Count("id"))
        return {event_type or "(unreadable)": n for event_type, n in counted}

    open_now = by_type(ParkedMessage.objects.filter(status=ParkedStatus.PARKED))
    recent = by_type(ParkedMessage.objects.filter(parked_at__gte=since))
    return {"in_window": recent, "open": open_now, "open_total": sum(open_now.values())}


def _relay() -> dict[str, Any]:
    latest = ProcessBeat.objects.filter(kind=RELAY_KIND).order_by("-beat_at")
    beat_at = latest.values_list("beat_at", flat=True).first()
    ago = (timezone.now() - beat_at).total_seconds() if beat_at else None
    alive = ago is not None and ago <= max(3 * settings.SAGA_FLOW_SECONDS, 10.0)
    return {"alive": alive, "last_beat_seconds": None if ago is None else round(ago, 1)}


def _queues() -> dict[str, Any]:
    """What the broker says of this service's queues: consumers (its workers) and ready messages."""
    found: dict[str, Any] = {}
    queues = topology()
    try:
        with broker_connection() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel = conn.channel()
            try:
                for role, queue in [
                    ("events", queues.events_queue),
                    ("parked", queues.parked_queue),
                    *[(f"retry {q.name}", q) for q in queues.retry_queues],
                ]:
                    _, ready, consumers = channel.queue_declare(queue=queue.name, passive=True)
                    found[role] = {"name": queue.name, "ready": ready, "consumers": consumers}
            finally:
                channel.close()
    except Exception as exc:  # noqa: BLE001 - reported on the map, not raised
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return found


def report(window: str) -> dict[str, Any]:
    """This service's part of the saga map for ``window`` (a key of :data:`WINDOWS`)."""
    since = window_since(WINDOWS[window])
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL jit = off")  # sums of a few thousand rows: never worth compiling
        edges = _edges(cursor, since)
        counts = _counts(cursor, since)
    queues = _queues()
    events = queues.get("events", {})
    return {
        "service": settings.SERVICE_NAME,
        "window": window,
        "since": since.isoformat(),
        "registry": registry().describe(),
        "edges": edges,
        "counts": counts,
        "parked": _parked(since),
        "outbox": asdict(outbox_backlog()),
        "relay": _relay(),
        "queues": queues,
        "workers_alive": bool(events.get("consumers")),
        "retrying": sum(q["ready"] for role, q in queues.items() if role.startswith("retry ")),
        "took_ms": round((time.perf_counter() - started) * 1000, 1),
    }
