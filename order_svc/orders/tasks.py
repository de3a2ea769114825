"""Periodic jobs of the Order service (run by celery beat as ``order-beat``)."""

from celery import shared_task

from order_svc.orders import services


@shared_task(name="order.cancel_overdue")
def cancel_overdue() -> int:
    return services.order_cancel_overdue()
