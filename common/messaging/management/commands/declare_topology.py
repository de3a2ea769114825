from django.core.management.base import BaseCommand

from common.messaging.broker import Publisher, topology
from common.messaging.topology import declare_service


class Command(BaseCommand):
    help = "Declare this service's exchanges, queues and bindings on RabbitMQ (idempotent)."

    def handle(self, *args, **options) -> None:
        topo = topology()
        publisher = Publisher()
        try:
            declare_service(publisher.connection().default_channel, topo)
        finally:
            publisher.close()
        keys = ", ".join(binding.routing_key for binding in topo.events_queue.bindings)
        self.stdout.write(f"declared {topo.events_queue.name} bound to: {keys}")
        self.stdout.write(f"retry tiers: {', '.join(q.name for q in topo.retry_queues)}")
        self.stdout.write(f"parking lot: {topo.parked_queue.name}")
