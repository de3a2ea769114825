import signal

from django.core.management.base import BaseCommand

from common.relay import Relay


class Command(BaseCommand):
    help = "Run this service's outbox relay (publishes committed events with confirms)."

    def handle(self, *args, **options) -> None:
        relay = Relay()
        signal.signal(signal.SIGTERM, lambda *_: relay.stop())
        signal.signal(signal.SIGINT, lambda *_: relay.stop())
        relay.run_forever()
