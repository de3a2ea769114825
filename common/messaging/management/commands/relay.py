import signal

from django.conf import settings
from django.core.management.base import BaseCommand

from common.messaging.relay import Relay
from common.observability.metrics import start_metrics_server


class Command(BaseCommand):
    help = "Run this service's outbox relay (publishes committed events with confirms)."

    def handle(self, *args, **options) -> None:
        # Its own /metrics when SAGA_METRICS_PORT is set (compose), with the database gauges:
        # the relay reads the database anyway, and there are fewer relays than workers.
        start_metrics_server(database_gauges_of=settings.SERVICE_NAME)
        relay = Relay()
        signal.signal(signal.SIGTERM, lambda *_: relay.stop())
        signal.signal(signal.SIGINT, lambda *_: relay.stop())
        relay.run_forever()
