from django.apps import AppConfig


class DomainConfig(AppConfig):
    name = "order_svc.orders"
    label = "orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from common.messaging import flow
        from common.observability import metrics
        from order_svc.orders.flow import SOURCE as ORDERS_FLOW
        from order_svc.orders.selectors import order_stuck_counts  # models: after the registry is ready

        # /metrics reports saga_stuck_sagas: what the admin's Stuck sagas lists.
        metrics.register_stuck_sagas(lambda grace: order_stuck_counts(grace_seconds=grace))
        # The saga map: orders by status per minute, rolled up with the inbox's figures.
        flow.register_source(ORDERS_FLOW)
