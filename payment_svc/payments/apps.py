from django.apps import AppConfig


class DomainConfig(AppConfig):
    name = "payment_svc.payments"
    label = "payments"
    default_auto_field = "django.db.models.BigAutoField"
