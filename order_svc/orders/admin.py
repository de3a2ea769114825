from django.contrib import admin
from django.utils import timezone

from order_svc.orders.models import Order, OrderLine, SagaEvent

admin.site.site_header = "Order service"


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class OrderLineInline(ReadOnlyInline):
    model = OrderLine
    fields = ("sku", "quantity", "unit_price")


class SagaEventInline(ReadOnlyInline):
    model = SagaEvent
    fields = ("occurred_at", "event_type", "service", "event_id", "causation_id")
    ordering = ("occurred_at", "id")
    verbose_name_plural = "Timeline"


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    """Saga state is read-only here: orders change only through events and services."""

    list_display = ("id", "status", "customer_id", "total", "age", "failure_reason", "created_at")
    list_filter = ("status", "created_at")
    search_fields = ("id", "customer_id")
    inlines = [OrderLineInline, SagaEventInline]
    readonly_fields = [f.name for f in Order._meta.fields]

    @admin.display(description="age")
    def age(self, order: Order) -> str:
        end = order.finished_at or timezone.now()
        return f"{(end - order.created_at).total_seconds():.1f}s"

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
