"""The Celery app of a service: hosts the event consumer and the periodic tasks.

Events are consumed by a consumer bootstep (``EventConsumerStep``) rather than as
Celery tasks: events are plain JSON envelopes (not Celery task messages, so any
producer can emit them), and every delivery — even an undecodable one — reaches
our code, which decides ack / retry / park. Celery gives us the process model,
reconnection, remote control and Flower.
"""

from __future__ import annotations

import logging

from celery import Celery, bootsteps
from celery.signals import worker_init
from celery.worker.consumer import Consumer
from celery.worker.control import inspect_command

log = logging.getLogger("saga.worker")


@worker_init.connect
def serve_metrics(**_: object) -> None:
    """The worker's own ``/metrics`` when ``SAGA_METRICS_PORT`` is set (compose: no shared files).

    ``worker_init`` fires once, in the worker's main process, before it connects to the
    broker: the process where the event consumer bootstep runs (whatever the pool).
    """
    from common.observability.metrics import start_metrics_server

    start_metrics_server()


class EventConsumerStep(bootsteps.ConsumerStep):
    """Consumes ``<service>.events``; re-created by Celery after a reconnect."""

    def start(self, c):
        # The event loop collects group-commit batches (common/messaging/consumer.py); a worker
        # without one (a green pool) handles one delivery at a time.
        self._consumer_for_process().attach(c.hub)
        super().start(c)

    def stop(self, c):
        self._consumer_for_process().detach()
        super().stop(c)

    def shutdown(self, c):
        self._consumer_for_process().detach()
        super().shutdown(c)

    def _consumer_for_process(self):
        from common.messaging.consumer import EventConsumer

        if getattr(self, "_event_consumer", None) is None:
            self._event_consumer = EventConsumer()
            self._declared = False
        return self._event_consumer

    def get_consumers(self, channel):
        from common.messaging.broker import topology
        from common.messaging.topology import declare_service

        consumer = self._consumer_for_process()
        if not self._declared:
            # The whole topology once per process (exchanges, tiers, parking lot: durable,
            # they outlive a broker restart). After a reconnect the consumers re-declare
            # their own queues and bindings, which is all a restarted broker can be missing
            # that we consume from; re-declaring everything cost a second per reconnect
            # on a slow network (make chaos).
            declare_service(channel, topology())
            self._declared = True
        log.info("consuming %s", topology().events_queue.name)
        # One channel each: a basic.qos applies to the consumers started after it on its
        # channel, so on a shared channel the parking lot's prefetch of 1 (set last, as
        # kombu sets a consumer's prefetch when it is created) was also the events
        # queue's. Celery closes every consumer's channel on stop.
        return [
            consumer.consumer(channel),
            consumer.parked_consumer(channel.connection.channel()),
        ]


@inspect_command()
def active_queues(state) -> list[dict]:
    """Celery's task queues plus the event and parking-lot queues our bootstep consumes.

    Replaces Celery's own ``active_queues`` so that Flower (which lists the queues its
    workers report) shows ``<service>.events`` and ``<service>.parked`` with their lengths.
    """
    from common.messaging.broker import topology

    task_consumer = state.consumer.task_consumer
    queues = list(task_consumer.queues) if task_consumer else []
    queues += [topology().events_queue, topology().parked_queue]
    return [dict(queue.as_dict(recurse=True)) for queue in queues]


class SagaConsumer(Consumer):
    """Celery's worker consumer, reconnecting to the broker within seconds, not half a minute.

    Celery retries a lost broker connection after 2, 4, 6 … up to 30 s (kombu's
    defaults, not configurable); a 3-second RabbitMQ restart could stall a service for
    12 s or more and push sagas past their deadline. We retry after 0.2 s, then every
    0.5 s more, at most every 2 s.

    Without Celery's native delayed delivery: on quorum queues Celery 5.5+ declares 28
    ``celery_delayed_*`` exchanges and queues for ETA and countdown tasks. We have none
    (retries go through each service's own delay tiers), and a service's broker user may
    not declare them (docs/security.md), so every worker start on quorum queues logged a
    CRITICAL "Failed to setup delayed delivery". Celery has no switch for it.
    """

    class Blueprint(Consumer.Blueprint):
        default_steps = [s for s in Consumer.Blueprint.default_steps if not s.endswith(":DelayedDelivery")]

    def ensure_connected(self, conn):
        ensure = conn.ensure_connection

        def quickly(*args, **kwargs):
            kwargs.setdefault("interval_start", 0.2)
            kwargs.setdefault("interval_step", 0.5)
            kwargs.setdefault("interval_max", 2.0)
            return ensure(*args, **kwargs)

        conn.ensure_connection = quickly
        return super().ensure_connected(conn)


def make_celery(service: str) -> Celery:
    app = Celery(f"{service}_svc")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    # Celery's Django fixup closes the database connection before and after every task:
    # the once-a-second periodic task would make the event consumer in the same process
    # reconnect every second (measured: 3 % of the order worker's time, and a 5 ms stall
    # for the next event). Our connections are persistent and replaced when lost
    # (common/messaging/consumer.py), so let them live across thousands of tasks.
    app.conf["CELERY_DB_REUSE_MAX"] = 10_000
    app.steps["consumer"].add(EventConsumerStep)
    app.autodiscover_tasks()
    return app
