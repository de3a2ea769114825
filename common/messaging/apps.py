from django.apps import AppConfig


class MessagingConfig(AppConfig):
    """Outbox and inbox tables, present in every service's database."""

    name = "common.messaging"
    label = "messaging"
    verbose_name = "Messaging (outbox and inbox)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from common.messaging.models import ParkedMessage, ParkedStatus
        from common.observability import metrics
        from common.observability.tracing import setup_tracing

        setup_tracing(settings.SERVICE_NAME)
        metrics.register_parked_messages(
            lambda: ParkedMessage.objects.filter(status=ParkedStatus.PARKED).count()
        )
