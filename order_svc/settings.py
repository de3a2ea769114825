"""Settings of the order service; everything shared comes from common/settings.py."""

from common.settings import configure

configure(globals(), service="order", domain_app="order_svc.orders")

# The deadline sweep: celery beat (supervisor program order-beat) sends this task to
# the order worker; it expires rather than piling up while the worker is down.
CELERY_BEAT_SCHEDULE = {
    "cancel-overdue-orders": {
        "task": "order.cancel_overdue",
        "schedule": SAGA_DEADLINE_SWEEP_SECONDS,  # noqa: F821 - set by configure()
        "options": {"expires": SAGA_DEADLINE_SWEEP_SECONDS * 5},  # noqa: F821
    }
}
