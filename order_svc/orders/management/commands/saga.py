from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from order_svc.orders import selectors


class Command(BaseCommand):
    help = "Show one order's saga timeline across the four services, or list the stuck sagas."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        show = sub.add_parser("show", help="the timeline of one order")
        show.add_argument("order_id")
        sub.add_parser("stuck", help="non-terminal orders past their deadline, oldest first")

    def handle(self, *args, action: str, **options) -> None:
        if action == "show":
            self.show(options["order_id"])
        else:
            self.stuck()

    def show(self, order_id: str) -> None:
        try:
            order = selectors.order_get(order_id=order_id)
        except Exception as exc:  # noqa: BLE001 - a malformed id is the user's error
            raise CommandError(f"{order_id!r} is not an order id") from exc
        if order is None:
            raise CommandError(f"no order {order_id}")
        write = self.stdout.write
        write(f"order {order.id}  {order.status}  customer {order.customer_id}  total {order.total}")
        if order.failure_reason:
            write(f"reason: {order.failure_reason}")
        if order.compensations_expected:
            pending = order.compensations_pending
            write(
                f"compensations: expected {', '.join(order.compensations_expected)}"
                f"; waiting for {', '.join(pending) if pending else 'nothing'}"
            )
        write(f"created {order.created_at.isoformat()}  deadline {order.deadline_at.isoformat()}")
        write("")
        write(f"  {'at (ms)':>9}  {'+ms':>7}  {'event':<19} {'service':<10} detail")
        for step in selectors.order_timeline(order=order):
            since = step["since_previous_ms"]
            write(
                f"  {step['since_start_ms']:9.1f}  {'' if since is None else f'{since:7.1f}':>7}  "
                f"{step['event_type']:<19} {step['service']:<10} {step['detail']}"
            )

    def stuck(self) -> None:
        now = timezone.now()
        orders = list(selectors.order_stuck()[:500])
        if not orders:
            self.stdout.write("no stuck sagas")
            return
        for order in orders:
            overdue = (now - order.deadline_at).total_seconds()
            self.stdout.write(
                f"{order.id}  {order.status:<12} {overdue:8.1f}s past deadline  "
                f"customer {order.customer_id}  {order.failure_reason}"
            )
