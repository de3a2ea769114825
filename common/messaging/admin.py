from django.contrib import admin
from django.utils import timezone

from common.messaging.models import InboxMessage, OutboxMessage


class ReadOnlyAdmin(admin.ModelAdmin):
    """Messaging rows are evidence; the admin shows them and never edits them."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "event_type", "saga_id", "created_at", "published_at", "publish_attempts")
    list_filter = (("published_at", admin.EmptyFieldListFilter), "event_type")
    search_fields = ("event_id", "saga_id")

    def changelist_view(self, request, extra_context=None):
        pending = OutboxMessage.objects.filter(published_at__isnull=True).order_by("id")
        oldest = pending.first()
        extra_context = extra_context or {}
        age = (timezone.now() - oldest.created_at).total_seconds() if oldest else 0
        extra_context["title"] = (
            f"Outbox — {pending.count()} unpublished, oldest {age:.1f}s old"
            if oldest
            else "Outbox — everything published"
        )
        return super().changelist_view(request, extra_context)


@admin.register(InboxMessage)
class InboxMessageAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "event_type", "saga_id", "producer", "received_at")
    list_filter = ("event_type", "producer")
    search_fields = ("event_id", "saga_id")
