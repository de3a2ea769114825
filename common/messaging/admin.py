from django.contrib import admin, messages

from common.admin import ReadOnlyAdmin
from common.messaging.models import InboxMessage, OutboxMessage, ParkedAction, ParkedMessage
from common.messaging.outbox import outbox_backlog
from common.messaging.parking import parked_discard, parked_replay


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "event_type", "saga_id", "created_at", "published_at", "publish_attempts")
    list_filter = (("published_at", admin.EmptyFieldListFilter), "event_type")
    search_fields = ("event_id", "saga_id")

    def changelist_view(self, request, extra_context=None):
        backlog = outbox_backlog()
        extra_context = extra_context or {}
        extra_context["title"] = (
            f"Outbox — {backlog.unpublished} unpublished, oldest {backlog.oldest_seconds:.1f}s old"
            if backlog.unpublished
            else "Outbox — everything published"
        )
        return super().changelist_view(request, extra_context)


@admin.register(InboxMessage)
class InboxMessageAdmin(ReadOnlyAdmin):
    list_display = ("event_id", "event_type", "saga_id", "producer", "received_at")
    list_filter = ("event_type", "producer")
    search_fields = ("event_id", "saga_id")


class ParkedActionInline(admin.TabularInline):
    model = ParkedAction
    extra = 0
    can_delete = False
    fields = ("at", "action", "operator", "note")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ParkedMessage)
class ParkedMessageAdmin(ReadOnlyAdmin):
    """Parked messages; replay and discard are actions, recorded with the operator's name."""

    list_display = ("id", "status", "parked_at", "event_type", "saga_id", "attempts", "short_reason")
    list_filter = ("status", "event_type")
    search_fields = ("saga_id", "event_id", "reason")
    readonly_fields = (
        "status",
        "parked_at",
        "event_type",
        "event_id",
        "saga_id",
        "attempts",
        "reason",
        "last_error",
        "headers",
        "body_text",
    )
    exclude = ("body", "delivery_key")
    inlines = [ParkedActionInline]
    actions = ["replay", "discard"]

    @admin.display(description="reason")
    def short_reason(self, message: ParkedMessage) -> str:
        return message.reason[:120]

    def _apply(self, request, queryset, action, verb: str) -> None:
        done, failed = 0, []
        for message in queryset:
            try:
                action(message_id=message.id, operator=request.user.get_username())
                done += 1
            except Exception as exc:  # noqa: BLE001 - reported to the operator
                failed.append(f"#{message.id}: {exc}")
        if done:
            self.message_user(request, f"{verb} {done} message(s).", messages.SUCCESS)
        if failed:
            self.message_user(request, "Not done: " + "; ".join(failed), messages.ERROR)

    @admin.action(description="Replay to this service's queue (attempts reset)")
    def replay(self, request, queryset) -> None:
        self._apply(request, queryset, parked_replay, "Replayed")

    @admin.action(description="Discard for good (recorded)")
    def discard(self, request, queryset) -> None:
        self._apply(request, queryset, parked_discard, "Discarded")
