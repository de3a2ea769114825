from django.apps import AppConfig


class DomainConfig(AppConfig):
    name = "order_svc.orders"
    label = "orders"
    default_auto_field = "django.db.models.BigAutoField"
