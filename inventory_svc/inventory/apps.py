from django.apps import AppConfig


class DomainConfig(AppConfig):
    name = "inventory_svc.inventory"
    label = "inventory"
    default_auto_field = "django.db.models.BigAutoField"
