#!/usr/bin/env python3
"""The raw ceiling of this machine for the saga platform benchmark, every guarantee on.

    scripts/bench_ceiling.py [--seconds 5] [--json]

A saga costs broker deliveries and database transactions. Before blaming (or praising)
the services for the sagas/s a benchmark reaches, this measures what the machine can
do at best with the plainest possible code and the same durability guarantees the
platform relies on, so that the benchmark figure can be read as a fraction of it:

- :func:`broker_ceiling`: persistent messages (delivery_mode 2, ~600-byte JSON bodies
  shaped like a saga event) published through the default exchange to a durable
  classic queue declared for the run (``bench.ceiling.<random>``, deleted at the end,
  with an ``x-expires`` safety net), while a consumer process acks each message
  (prefetch 100). Two publisher modes, each for ``seconds``:

  * ``confirm_each``: wait for the broker's confirm after every message (kombu's
    ``confirm_publish`` transport option, what the platform's relay and Celery use);
  * ``confirm_batched``: confirms enabled on the channel, ``batch`` messages published,
    then wait until the broker acked them all (the pipelined rate).

  * ``group``: publishing as ``confirm_batched``, and the consumer acks every ``group``
    messages with one ``basic.ack(multiple=True)``, as the services' group commit does.

  The figure is the publish→consume rate: messages consumed / time from the first
  publish to the last consume, once the consumer received everything.

- :func:`sql_ceiling`: the plain-SQL saga step with psycopg2 (SELECT a product's stock
  and version, optimistic UPDATE, INSERT into an inbox, INSERT a 600-byte outbox row,
  COMMIT with ``synchronous_commit`` as the server has it, on by default), in a
  scratch schema ``bench_ceiling`` created for the run and dropped at the end. Run
  with 1 client, then with ``clients`` processes; steps/s and p50 step latency. Then
  batched, as the services' group commit works: ``group`` steps per transaction (their
  products locked in id order), the inbox and outbox rows one multi-row INSERT each,
  one COMMIT, with ``clients`` processes.

- :func:`saga_ceiling`: the sagas/s those two rates imply for a saga needing
  ``deliveries`` broker deliveries and ``transactions`` database transactions (a step
  each): the one-step ceiling from ``confirm_batched`` and the one-step SQL rate, the
  batched ceiling from ``group`` and the batched SQL rate.

Publisher, consumer and SQL clients are separate processes (separate connections), so
the Python client cost is spread over the cores as the services' workers would be.
The CPUs' background load is sampled first and reported (with a warning above 15 %):
a ceiling measured while something else runs (the stack under load) is not one.
Progress goes to stderr; results to stdout (a summary, or JSON with ``--json``).
Credentials are never printed (the broker URL is shown with its password masked).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import multiprocessing.context
import multiprocessing.process
import multiprocessing.queues
import multiprocessing.synchronize
import os
import random
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from queue import Empty
from typing import Any

import psycopg2
from kombu import Connection, Consumer, Producer, Queue

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_BROKER_URL = "amqp://saga:saga@127.0.0.1:5672/saga"
SCHEMA = "bench_ceiling"
PRODUCTS = 1000
PREFETCH = 100
CONNECT_TIMEOUT = 10.0
CONFIRM_TIMEOUT = 30.0  # seconds to wait for the broker to confirm one batch
DRAIN_IDLE_TIMEOUT = 30.0  # consumer gives up if nothing arrives for this long after the publisher ended
QUEUE_EXPIRES_MS = 300_000  # safety net: the broker drops the queue if a killed run left it unused
# The default saga (README, "success" path): 9 deliveries (OrderPlaced to inventory and
# shipping, InventoryReserved to order and payment, PaymentCompleted to order and
# shipping, ShipmentScheduled, OrderCompleted, InventoryDeducted) and 10 transactions
# (the POST, one per handled delivery). Publishing what a transaction emitted needs no
# transaction of its own: the pushers mark published rows in batches (common/messaging/direct.py).
BUSY_WARNING = 0.15  # share of the CPUs busy before the run above which the figures are suspect
DEFAULT_DELIVERIES = 9.0
DEFAULT_TRANSACTIONS = 10.0
DEFAULT_GROUP = 16  # steps per transaction / messages per multiple-ack (the services' SAGA_BATCH_MAX)


def _event_body(size: int = 600) -> bytes:
    """A JSON saga event envelope padded to ``size`` bytes (built once, reused)."""
    envelope: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": "InventoryReserved",
        "saga_id": str(uuid.uuid4()),
        "occurred_at": "2024-01-01T00:00:00.000000+00:00",
        "producer": "inventory",
        "causation_id": str(uuid.uuid4()),
        "trace": {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
        "schema_version": 1,
        "payload": {
            "order_id": str(uuid.uuid4()),
            "customer_id": "customer-0001",
            "items": [{"sku": "SKU-0001", "quantity": 2, "unit_price": "19.90"}],
            "total": "39.80",
            "note": "",
        },
    }
    raw = json.dumps(envelope, separators=(",", ":"), sort_keys=True)
    envelope["payload"]["note"] = "x" * max(0, size - len(raw))
    return json.dumps(envelope, separators=(",", ":"), sort_keys=True).encode()


BODY = _event_body()


def _progress(line: str) -> None:
    sys.stderr.write(f"ceiling: {line}\n")
    sys.stderr.flush()


def _context() -> multiprocessing.context.BaseContext:
    # fork: the children run this module's functions even when it was loaded from a
    # path (tests) rather than imported by name; they open their own connections.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


# ------------------------------------------------------------------ broker


def _publish_body(producer: Producer, queue: str) -> None:
    producer.publish(
        BODY,
        exchange="",
        routing_key=queue,
        delivery_mode=2,
        content_type="application/json",
        content_encoding="utf-8",
    )


def _publisher(
    url: str,
    queue: str,
    mode: str,
    seconds: float,
    batch: int,
    sent_total: Any,
    results: multiprocessing.queues.Queue,
) -> None:
    """Publish for ``seconds`` in ``mode``; report how many were published and confirmed."""
    sent = 0
    try:
        options = {"confirm_publish": True} if mode == "confirm_each" else {}
        with Connection(url, connect_timeout=CONNECT_TIMEOUT, transport_options=options) as conn:
            channel = conn.default_channel
            producer = Producer(channel, auto_declare=False)
            if mode == "confirm_each":
                start = time.monotonic()
                deadline = start + seconds
                while True:
                    _publish_body(producer, queue)  # returns once the broker confirmed it
                    sent += 1
                    if time.monotonic() >= deadline:
                        break
            else:
                pending: set[int] = set()
                nacked: list[int] = []

                def on_ack(delivery_tag: int, multiple: bool) -> None:
                    if multiple:
                        pending.difference_update([tag for tag in pending if tag <= delivery_tag])
                    else:
                        pending.discard(delivery_tag)

                def on_nack(delivery_tag: int, multiple: bool) -> None:
                    nacked.append(delivery_tag)
                    on_ack(delivery_tag, multiple)

                channel.events["basic_ack"].add(on_ack)
                channel.events["basic_nack"].add(on_nack)
                channel.confirm_select()
                start = time.monotonic()
                deadline = start + seconds
                while True:
                    for _ in range(batch):
                        pending.add(sent + 1)  # delivery tags count from 1 after confirm.select
                        _publish_body(producer, queue)
                        sent += 1
                    give_up = time.monotonic() + CONFIRM_TIMEOUT
                    while pending:
                        left = give_up - time.monotonic()
                        if left <= 0:
                            raise TimeoutError(
                                f"{len(pending)} messages not confirmed in {CONFIRM_TIMEOUT} s"
                            )
                        try:
                            conn.drain_events(timeout=left)
                        except TimeoutError:
                            continue
                    if nacked:
                        raise RuntimeError(f"the broker nacked {len(nacked)} messages")
                    if time.monotonic() >= deadline:
                        break
            end = time.monotonic()
        results.put({"role": "publisher", "published": sent, "first_publish": start, "last_confirm": end})
    except Exception as exc:
        results.put({"role": "publisher", "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        sent_total.value = sent  # lets the consumer stop once it has them all


def _consumer(
    url: str,
    queue: str,
    sent_total: Any,
    ready: multiprocessing.synchronize.Event,
    results: multiprocessing.queues.Queue,
    ack_every: int = 1,
) -> None:
    """Ack every message (or every ``ack_every`` with one multiple-ack) until the publisher is
    done and all it sent has arrived."""
    consumed = 0
    first: float | None = None
    last: float | None = None
    unacked: list[Any] = []  # the last delivery not acked yet, if any

    def on_message(message: Any) -> None:
        nonlocal consumed, first, last
        if ack_every == 1:
            message.ack()
        elif (consumed + 1) % ack_every == 0:
            message.ack(multiple=True)
            unacked.clear()
        else:
            unacked[:] = [message]
        now = time.monotonic()
        if first is None:
            first = now
        last = now
        consumed += 1

    try:
        with Connection(url, connect_timeout=CONNECT_TIMEOUT) as conn:
            channel = conn.channel()
            consumer = Consumer(
                channel,
                queues=[Queue(queue, no_declare=True)],
                on_message=on_message,
                prefetch_count=PREFETCH,
                auto_declare=False,
            )
            with consumer:
                ready.set()
                last_progress = time.monotonic()
                seen = 0
                while True:
                    target = sent_total.value
                    if 0 <= target <= consumed:
                        break
                    with contextlib.suppress(TimeoutError):
                        conn.drain_events(timeout=0.2)
                    now = time.monotonic()
                    if consumed != seen:
                        seen, last_progress = consumed, now
                    elif target >= 0 and now - last_progress > DRAIN_IDLE_TIMEOUT:
                        break  # reported as incomplete
                for message in unacked:
                    message.ack(multiple=True)
        results.put({"role": "consumer", "consumed": consumed, "first_consume": first, "last_consume": last})
    except Exception as exc:
        results.put({"role": "consumer", "error": f"{type(exc).__name__}: {exc}"})
        raise


def _declare_queue(url: str, queue: str) -> None:
    with Connection(url, connect_timeout=CONNECT_TIMEOUT) as conn:
        conn.default_channel.queue_declare(
            queue=queue,
            durable=True,
            auto_delete=False,
            arguments={"x-queue-type": "classic", "x-expires": QUEUE_EXPIRES_MS},
        )


def _delete_queue(url: str, queue: str) -> None:
    try:
        with Connection(url, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.default_channel.queue_delete(queue=queue)
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the measurement's own outcome
        _progress(f"could not delete queue {queue} ({type(exc).__name__}: {exc}); it expires on its own")


def _stop(processes: list[multiprocessing.process.BaseProcess]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
        process.join(timeout=5)


def _broker_mode(url: str, mode: str, seconds: float, batch: int, ack_every: int = 1) -> dict[str, Any]:
    ctx = _context()
    queue = f"bench.ceiling.{uuid.uuid4().hex[:12]}"
    _declare_queue(url, queue)
    processes: list[multiprocessing.process.BaseProcess] = []
    try:
        sent_total = ctx.Value("q", -1)
        ready = ctx.Event()
        results = ctx.Queue()
        consumer = ctx.Process(
            target=_consumer,
            args=(url, queue, sent_total, ready, results, ack_every),
            name="ceiling-consumer",
        )
        consumer.start()
        processes.append(consumer)
        give_up = time.monotonic() + 2 * CONNECT_TIMEOUT
        while not ready.wait(0.2):
            if not consumer.is_alive() or time.monotonic() > give_up:
                raise RuntimeError("the consumer did not start")
        publisher = ctx.Process(
            target=_publisher,
            args=(
                url,
                queue,
                "confirm_batched" if mode == "group" else mode,
                seconds,
                batch,
                sent_total,
                results,
            ),
            name="ceiling-publisher",
        )
        publisher.start()
        processes.append(publisher)
        got: dict[str, dict[str, Any]] = {}
        give_up = time.monotonic() + seconds + CONNECT_TIMEOUT + CONFIRM_TIMEOUT + DRAIN_IDLE_TIMEOUT + 10
        while len(got) < 2:
            try:
                item = results.get(timeout=max(0.1, give_up - time.monotonic()))
            except Empty:
                missing = sorted({"publisher", "consumer"} - set(got))
                raise RuntimeError(f"broker {mode}: no result from {missing}") from None
            if "error" in item:
                raise RuntimeError(f"broker {mode}: the {item['role']} failed: {item['error']}")
            got[item["role"]] = item
        for process in processes:
            process.join(timeout=10)
    finally:
        _stop(processes)
        _delete_queue(url, queue)

    pub, con = got["publisher"], got["consumer"]
    published, consumed = pub["published"], con["consumed"]
    publish_seconds = pub["last_confirm"] - pub["first_publish"]
    span = (con["last_consume"] - pub["first_publish"]) if con["last_consume"] is not None else 0.0
    return {
        "published": published,
        "consumed": consumed,
        "complete": consumed == published,
        "publish_seconds": round(publish_seconds, 3),
        "publish_msgs_per_s": round(published / publish_seconds, 1) if publish_seconds > 0 else 0.0,
        "publish_to_consume_seconds": round(span, 3),
        "msgs_per_s": round(consumed / span, 1) if span > 0 else 0.0,
    }


def broker_ceiling(
    url: str, *, seconds: float = 5.0, batch: int = 50, group: int = DEFAULT_GROUP
) -> dict[str, Any]:
    """Publish→consume rate of persistent messages with publisher confirms, per mode.

    For each of ``confirm_each``, ``confirm_batched`` (``batch`` messages per wait) and
    ``group`` (batched confirms, and one multiple-ack per ``group`` messages), a fresh
    durable classic queue, a consumer process (manual ack, prefetch 100) and a publisher
    process publishing for ``seconds``. Returns, per mode: ``published``, ``consumed``,
    ``complete``, ``publish_msgs_per_s`` and ``msgs_per_s`` (consumed / time from the
    first publish to the last consume), plus the run's parameters.
    """
    if seconds <= 0 or batch < 1 or not 1 <= group <= PREFETCH:
        raise ValueError(f"seconds must be > 0, batch >= 1 and group 1..{PREFETCH}")
    figures: dict[str, Any] = {
        "broker": Connection(url).as_uri(),  # password masked
        "body_bytes": len(BODY),
        "batch": batch,
        "group_size": group,
        "prefetch": PREFETCH,
        "seconds": seconds,
    }
    for mode in ("confirm_each", "confirm_batched", "group"):
        _progress(f"broker {mode} {seconds:g} s…")
        figures[mode] = result = _broker_mode(url, mode, seconds, batch, group if mode == "group" else 1)
        _progress(
            f"broker {mode}: {result['published']} published, {result['consumed']} consumed, "
            f"{result['msgs_per_s']:.0f} msg/s publish→consume"
        )
    return figures


# ------------------------------------------------------------------ SQL

_SETUP = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.product (id int PRIMARY KEY, available int NOT NULL, version int NOT NULL);
CREATE TABLE {SCHEMA}.inbox (
    event_id uuid PRIMARY KEY, saga_id uuid NOT NULL, received_at timestamptz NOT NULL
);
CREATE TABLE {SCHEMA}.outbox (
    id bigserial PRIMARY KEY, event_id uuid NOT NULL, saga_id uuid NOT NULL,
    body text NOT NULL, created_at timestamptz NOT NULL
);
INSERT INTO {SCHEMA}.product (id, available, version)
    SELECT i, 1000000000, 0 FROM generate_series(1, {PRODUCTS}) AS i;
ANALYZE {SCHEMA}.product;
"""
_SELECT = f"SELECT available, version FROM {SCHEMA}.product WHERE id = %s"
_UPDATE = (
    f"UPDATE {SCHEMA}.product SET available = available - 1, version = version + 1 "
    "WHERE id = %s AND version = %s"
)
_INBOX = f"INSERT INTO {SCHEMA}.inbox (event_id, saga_id, received_at) VALUES (%s, %s, now())"
_OUTBOX = f"INSERT INTO {SCHEMA}.outbox (event_id, saga_id, body, created_at) VALUES (%s, %s, %s, now())"
# Batched: every step's inbox and outbox rows in one statement each.
# Batched: the batch's products locked in id order as it reads them (the services lock a
# batch's shared rows up front), so no other client moves a version under it.
_SELECT_LOCKED = _SELECT + " FOR NO KEY UPDATE"
_INBOX_MANY = (
    f"INSERT INTO {SCHEMA}.inbox (event_id, saga_id, received_at)"
    " SELECT e, s, now() FROM unnest(%s::uuid[], %s::uuid[]) AS t(e, s)"
)
_OUTBOX_MANY = (
    f"INSERT INTO {SCHEMA}.outbox (event_id, saga_id, body, created_at)"
    " SELECT e, s, %s, now() FROM unnest(%s::uuid[], %s::uuid[]) AS t(e, s)"
)
_SETTINGS = ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes")


def _connect(params: dict[str, Any]) -> Any:
    return psycopg2.connect(**{"connect_timeout": 10, "application_name": "saga-bench-ceiling", **params})


def _server_settings(params: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    conn = _connect(params)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in _SETTINGS:
                try:
                    cur.execute(f"SHOW {name}")
                    found[name] = cur.fetchone()[0]
                except psycopg2.Error:
                    found[name] = "?"
            cur.execute("SHOW server_version")
            found["server_version"] = cur.fetchone()[0]
    finally:
        conn.close()
    return found


def _execute(params: dict[str, Any], sql: str) -> None:
    conn = _connect(params)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def _sql_client(
    params: dict[str, Any],
    seconds: float,
    go: multiprocessing.synchronize.Event,
    results: multiprocessing.queues.Queue,
    group: int = 1,
) -> None:
    """Run saga steps for ``seconds`` once ``go`` is set; report steps, conflicts, latencies.

    ``group`` 1: one step per transaction. More: ``group`` steps per transaction, as the
    services' group commit does (see :func:`_group_step`); a step's latency is its batch's.
    """
    rng = random.Random()  # reseeded from os.urandom: forked clients must not share a sequence
    step = _one_step if group == 1 else _group_step
    try:
        conn = _connect(params)
        try:
            cur = conn.cursor()
            results.put({"role": "connected"})
            if not go.wait(60):
                raise TimeoutError("never told to start")
            latencies: list[float] = []
            conflicts = 0
            start = now = time.perf_counter()
            deadline = start + seconds
            while now < deadline:
                if not step(cur, rng, group):  # another client moved a version: the step would retry
                    conn.rollback()
                    conflicts += 1
                    now = time.perf_counter()
                    continue
                conn.commit()
                end = time.perf_counter()
                latencies.extend([end - now] * group)
                now = end
            results.put(
                {
                    "role": "client",
                    "steps": len(latencies),
                    "conflicts": conflicts,
                    "elapsed": now - start,
                    "latencies": latencies,
                }
            )
        finally:
            conn.close()
    except Exception as exc:
        results.put({"role": "client", "error": f"{type(exc).__name__}: {exc}"})
        raise


def _one_step(cur: Any, rng: random.Random, group: int) -> bool:
    """One saga step: read a product, version-checked update, inbox and outbox rows. False on
    a version conflict (nothing written that the caller's rollback would not undo)."""
    product = rng.randint(1, PRODUCTS)
    cur.execute(_SELECT, (product,))
    _available, version = cur.fetchone()
    cur.execute(_UPDATE, (product, version))
    if cur.rowcount != 1:
        return False
    saga_id = str(uuid.uuid4())
    cur.execute(_INBOX, (str(uuid.uuid4()), saga_id))
    cur.execute(_OUTBOX, (str(uuid.uuid4()), saga_id, BODY.decode()))
    return True


def _group_step(cur: Any, rng: random.Random, group: int) -> bool:
    """``group`` steps for one transaction: each product locked, read and version-checked (in
    id order, so that clients never wait on each other in a cycle), the inbox and outbox rows
    one INSERT each. False on a version conflict."""
    products = sorted(rng.sample(range(1, PRODUCTS + 1), group))
    for product in products:
        cur.execute(_SELECT_LOCKED, (product,))
        _available, version = cur.fetchone()
        cur.execute(_UPDATE, (product, version))
        if cur.rowcount != 1:
            return False
    events = [str(uuid.uuid4()) for _ in products]
    sagas = [str(uuid.uuid4()) for _ in products]
    cur.execute(_INBOX_MANY, (events, sagas))
    cur.execute(_OUTBOX_MANY, (BODY.decode(), [str(uuid.uuid4()) for _ in products], sagas))
    return True


def _sql_run(params: dict[str, Any], clients: int, seconds: float, group: int = 1) -> dict[str, Any]:
    ctx = _context()
    results = ctx.Queue()
    go = ctx.Event()
    processes: list[multiprocessing.process.BaseProcess] = []
    try:
        for n in range(clients):
            process = ctx.Process(
                target=_sql_client, args=(params, seconds, go, results, group), name=f"ceiling-sql-{n}"
            )
            process.start()
            processes.append(process)

        def collect(role: str, timeout: float) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            give_up = time.monotonic() + timeout
            while len(items) < clients:
                try:
                    item = results.get(timeout=max(0.1, give_up - time.monotonic()))
                except Empty:
                    raise RuntimeError(
                        f"sql: {clients - len(items)} clients did not report ({role})"
                    ) from None
                if "error" in item:
                    raise RuntimeError(f"sql: a client failed: {item['error']}")
                items.append(item)
            return items

        collect("connected", 30)
        go.set()
        reports = collect("client", seconds + 60)
        for process in processes:
            process.join(timeout=10)
    finally:
        _stop(processes)

    latencies = sorted(x for report in reports for x in report["latencies"])
    steps = sum(report["steps"] for report in reports)
    rate = sum(report["steps"] / report["elapsed"] for report in reports if report["elapsed"] > 0)
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 2 else float("nan")
    return {
        "steps": steps,
        "conflicts": sum(report["conflicts"] for report in reports),
        "steps_per_s": round(rate, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 3) if latencies else float("nan"),
        "p99_ms": round(p99 * 1000, 3),
    }


def sql_ceiling(
    params: dict[str, Any], *, clients: int = 4, seconds: float = 5.0, group: int = DEFAULT_GROUP
) -> dict[str, Any]:
    """Saga steps per second (one transaction each) with 1 client, then with ``clients``, then
    batched (``group`` steps per transaction) with ``clients``: ``steps_per_s_batched``.

    ``params`` are ``psycopg2.connect`` keyword arguments. The scratch schema
    ``bench_ceiling`` is (re)created at the start and dropped at the end, even on error.
    Returns ``steps_per_s_1``, ``steps_per_s_<clients>``, ``p50_ms_1``,
    ``p50_ms_<clients>`` (and p99, step and conflict counts) plus the server's
    durability settings (fsync, synchronous_commit, …).
    """
    if seconds <= 0 or clients < 1 or not 1 <= group <= PRODUCTS:
        raise ValueError("seconds must be > 0, clients >= 1 and group within the products")
    figures: dict[str, Any] = {
        "database": f"{params.get('dbname', '?')}@{params.get('host', '?')}:{params.get('port', '?')}",
        "seconds": seconds,
        "clients": clients,
        "group_size": group,
        "products": PRODUCTS,
        "body_bytes": len(BODY),
        "settings": _server_settings(params),
    }
    if figures["settings"].get("fsync") == "off" or figures["settings"].get("synchronous_commit") == "off":
        _progress("warning: the server runs with fsync or synchronous_commit off: not a durable ceiling")
    _progress(f"sql: creating schema {SCHEMA}")
    try:
        _execute(params, _SETUP)
        for n in dict.fromkeys((1, clients)):
            _progress(f"sql {n} client{'s' if n > 1 else ''} {seconds:g} s…")
            run = _sql_run(params, n, seconds)
            figures[f"steps_per_s_{n}"] = run["steps_per_s"]
            figures[f"p50_ms_{n}"] = run["p50_ms"]
            figures[f"p99_ms_{n}"] = run["p99_ms"]
            figures[f"steps_{n}"] = run["steps"]
            figures[f"conflicts_{n}"] = run["conflicts"]
            _progress(f"sql {n} client(s): {run['steps_per_s']:.0f} steps/s, p50 {run['p50_ms']:.2f} ms")
        _progress(f"sql {clients} clients, {group} steps per transaction, {seconds:g} s…")
        run = _sql_run(params, clients, seconds, group)
        figures["steps_per_s_batched"] = run["steps_per_s"]
        figures["p50_ms_batched"] = run["p50_ms"]
        figures["conflicts_batched"] = run["conflicts"]
        _progress(
            f"sql batched: {run['steps_per_s']:.0f} steps/s, {run['conflicts']} batches with a conflict"
        )
    finally:
        _progress(f"sql: dropping schema {SCHEMA}")
        _execute(params, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    return figures


# ------------------------------------------------------------------ saga


def saga_ceiling(
    broker_msgs_per_s: float, sql_steps_per_s: float, *, deliveries: float, transactions: float
) -> float:
    """Sagas/s implied by a broker rate and a SQL rate measured on the same machine.

        sagas/s = 1 / (deliveries / broker_msgs_per_s + transactions / sql_steps_per_s)

    One saga needs ``deliveries`` broker deliveries and ``transactions`` database
    transactions. Each rate was measured with the machine to itself, i.e. it is what
    the whole machine does when it does only that; ``1 / rate`` is the machine time one
    unit costs. The broker and PostgreSQL share the same cores (and disk), so their
    costs add rather than overlap: the time one saga takes of the machine is the sum.

    Assumptions: costs are additive and independent (no contention penalty when both
    run together, e.g. two fsync streams on one disk, and no gain from one filling the
    other's idle time); a delivery costs one measured publish→consume (a fan-out
    publish to two queues counts as two deliveries); a transaction costs one measured
    saga step. The services' own work (HTTP, JSON, Django ORM, tracing) is not
    counted, so the result is an upper bound on what the platform can reach.
    """
    if broker_msgs_per_s <= 0 or sql_steps_per_s <= 0:
        raise ValueError("rates must be positive")
    if deliveries < 0 or transactions < 0 or deliveries + transactions == 0:
        raise ValueError("deliveries and transactions must be >= 0, not both 0")
    return 1.0 / (deliveries / broker_msgs_per_s + transactions / sql_steps_per_s)


# ------------------------------------------------------------------ CLI


def background_cpu_busy(sample: float = 0.5) -> float | None:
    """Share of the CPUs (0–1) busy before the run, from /proc/stat; None where unavailable.

    A ceiling is only a ceiling on a quiet machine: anything else running (the stack
    under load, another benchmark) takes cores from the broker and PostgreSQL.
    """

    def times() -> tuple[int, int] | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        values = [int(x) for x in fields[:8]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)

    before = times()
    if before is None:
        return None
    time.sleep(sample)
    after = times()
    if after is None or after[1] == before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)


def default_broker_url() -> str:
    return os.environ.get("SAGA_BROKER_URL", DEFAULT_BROKER_URL)


def default_db_params(service: str = "order") -> dict[str, str]:
    """The service database's connection parameters, from the same variables as the services."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from common.settings import database_params  # no Django settings needed

    return database_params(service)


def _summary(report: dict[str, Any]) -> str:
    broker, sql, saga = report["broker"], report["sql"], report["saga"]
    clients = sql["clients"]
    settings = ", ".join(f"{k}={v}" for k, v in sql["settings"].items())
    lines = [
        f"cpus: {report['cpus']}, busy before the run: "
        + ("?" if report["background_cpu_busy"] is None else f"{report['background_cpu_busy']:.0%}"),
        f"broker {broker['broker']}: persistent {broker['body_bytes']}-byte messages, durable classic queue,"
        f" prefetch {broker['prefetch']}, {broker['seconds']:g} s per mode",
    ]
    for mode in ("confirm_each", "confirm_batched", "group"):
        fig = broker[mode]
        label = {"confirm_each": mode, "confirm_batched": f"{mode} ({broker['batch']})"}.get(
            mode, f"group (ack per {broker['group_size']})"
        )
        lines.append(
            f"  {label:<22} published {fig['published']:>7}  consumed {fig['consumed']:>7}"
            f"  publish {fig['publish_msgs_per_s']:>8.0f} msg/s"
            f"  publish→consume {fig['msgs_per_s']:>8.0f} msg/s" + ("" if fig["complete"] else "  INCOMPLETE")
        )
    lines.append(f"postgres {sql['database']}: {settings}")
    for n in dict.fromkeys((1, clients)):
        lines.append(
            f"  {n} client{'s' if n > 1 else ' '}  {sql[f'steps_per_s_{n}']:>8.0f} steps/s"
            f"  p50 {sql[f'p50_ms_{n}']:.2f} ms  p99 {sql[f'p99_ms_{n}']:.2f} ms"
            f"  ({sql[f'steps_{n}']} steps, {sql[f'conflicts_{n}']} version conflicts)"
        )
    lines.append(
        f"  {clients} clients, {sql['group_size']} steps per transaction"
        f"  {sql['steps_per_s_batched']:>8.0f} steps/s"
    )
    lines.append(
        f"saga ceiling ({saga['deliveries']:g} deliveries + {saga['transactions']:g} transactions per saga,"
        f" sql at {clients} clients):"
    )
    for mode in ("confirm_each", "confirm_batched"):
        lines.append(f"  with {mode:<16} {saga[mode]:>8.1f} sagas/s")
    lines.append(f"  batched (group commit) {saga['group']:>8.1f} sagas/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("--batch", type=int, default=50, help="messages per confirm wait (default 50)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent SQL clients (default 4)")
    parser.add_argument(
        "--group",
        type=int,
        default=DEFAULT_GROUP,
        help="steps per transaction, messages per ack (default 16)",
    )
    parser.add_argument(
        "--deliveries", type=float, default=DEFAULT_DELIVERIES, help="broker deliveries per saga"
    )
    parser.add_argument(
        "--transactions", type=float, default=DEFAULT_TRANSACTIONS, help="transactions per saga"
    )
    parser.add_argument("--service", default="order", help="whose database to use (default order)")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the scratch queue and schema are still removed.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))

    started = time.monotonic()
    busy = background_cpu_busy()
    if busy is not None and busy > BUSY_WARNING:
        _progress(f"warning: the CPUs are already {busy:.0%} busy: the figures will be below the ceiling")
    broker = broker_ceiling(default_broker_url(), seconds=args.seconds, batch=args.batch, group=args.group)
    sql = sql_ceiling(
        default_db_params(args.service), clients=args.clients, seconds=args.seconds, group=args.group
    )
    sql_rate = sql[f"steps_per_s_{args.clients}"]
    saga = {"deliveries": args.deliveries, "transactions": args.transactions, "sql_clients": args.clients}
    for mode in ("confirm_each", "confirm_batched"):
        rate = broker[mode]["msgs_per_s"]
        saga[mode] = (
            round(saga_ceiling(rate, sql_rate, deliveries=args.deliveries, transactions=args.transactions), 1)
            if rate > 0 and sql_rate > 0
            else 0.0
        )
    group_rate, batched_sql = broker["group"]["msgs_per_s"], sql["steps_per_s_batched"]
    saga["group"] = (
        round(
            saga_ceiling(group_rate, batched_sql, deliveries=args.deliveries, transactions=args.transactions),
            1,
        )
        if group_rate > 0 and batched_sql > 0
        else 0.0
    )
    report = {"cpus": os.cpu_count(), "background_cpu_busy": busy, "broker": broker, "sql": sql, "saga": saga}
    _progress(f"done in {time.monotonic() - started:.1f} s")
    sys.stdout.write((json.dumps(report, indent=2) if args.json else _summary(report)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
