from django.apps import AppConfig


class DomainConfig(AppConfig):
    name = "order_svc.orders"
    label = "orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from common.observability import metrics
        from order_svc.orders.selectors import order_stuck_counts  # models: after the registry is ready

        # /metrics reports saga_stuck_sagas: what the admin's Stuck sagas lists.
        metrics.register_stuck_sagas(lambda grace: order_stuck_counts(grace_seconds=grace))
