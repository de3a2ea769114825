from django.apps import AppConfig


class DomainConfig(AppConfig):
    name = "shipping_svc.shipping"
    label = "shipping"
    default_auto_field = "django.db.models.BigAutoField"
