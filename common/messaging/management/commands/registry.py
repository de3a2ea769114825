import json

from django.core.management.base import BaseCommand

from common.messaging.broker import registry


class Command(BaseCommand):
    help = "Print what this service consumes, emits and compensates (JSON), from its handler registry."

    def handle(self, *args, **options) -> None:
        self.stdout.write(json.dumps(registry().describe(), indent=2))
