"""Settings of the order service; everything shared comes from common/settings.py."""

from common.settings import configure, env_float

configure(globals(), service="order", domain_app="order_svc.orders")

# An order not terminal this long after it was placed is cancelled by the deadline sweep.
SAGA_ORDER_DEADLINE_SECONDS = env_float("SAGA_ORDER_DEADLINE_SECONDS", 30.0)
SAGA_DEADLINE_SWEEP_SECONDS = env_float("SAGA_DEADLINE_SWEEP_SECONDS", 1.0)
# An order not terminal this long after its deadline counts as stuck (saga_stuck_sagas).
SAGA_STUCK_GRACE_SECONDS = env_float("SAGA_STUCK_GRACE_SECONDS", 60.0)

# The deadline sweep: celery beat (supervisor program order-beat) sends this task to
# the order worker; it expires rather than piling up while the worker is down.
CELERY_BEAT_SCHEDULE = {
    "cancel-overdue-orders": {
        "task": "order.cancel_overdue",
        "schedule": SAGA_DEADLINE_SWEEP_SECONDS,
        "options": {"expires": SAGA_DEADLINE_SWEEP_SECONDS * 5},
    }
}
