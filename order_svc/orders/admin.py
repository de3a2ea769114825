"""The operator's home: every order with its saga timeline across the four services."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from common.admin import ReadOnlyAdmin, ReadOnlyInline
from common.messaging import flow
from order_svc.orders import sagamap, selectors
from order_svc.orders.models import Order, OrderLine, StuckOrder

admin.site.site_header = "Order service — sagas"
admin.site.site_title = "Order service"
admin.site.index_title = "Orders, their sagas, and what needs a person"
admin.site.index_template = "orders/admin_index.html"  # the saga map above the models


def _map_context(request: HttpRequest) -> dict[str, Any]:
    window = request.GET.get("window", "5m")
    if window not in flow.WINDOWS:
        window = "5m"
    built = sagamap.saga_map(window)
    return {
        "saga_map": built,
        "svg": mark_safe(built.svg),  # noqa: S308 - Graphviz's output from our own labels (escaped by dot)
        "boxes": list(built.boxes.values()),
        "orders": sorted(built.orders.items()),
        "since": flow.window_since(flow.WINDOWS[window]).isoformat(),
        "window_label": sagamap.WINDOW_LABELS[window],
        "windows": list(sagamap.WINDOW_LABELS.items()),
    }


def index_with_map(request: HttpRequest) -> HttpResponse:
    """The admin's home, the saga map first."""
    return admin.site.index(request, extra_context=_map_context(request))


def saga_map_page(request: HttpRequest) -> HttpResponse:
    """The saga map on its own page (refreshed every 10 s)."""
    context = {**admin.site.each_context(request), "title": "Saga map", **_map_context(request)}
    return TemplateResponse(request, "orders/saga_map.html", context)


class OrderLineInline(ReadOnlyInline):
    model = OrderLine
    fields = ("sku", "quantity", "unit_price")


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"
    BANDS = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}

    def lookups(self, request, model_admin):
        return [("1m", "last minute"), ("1h", "last hour"), ("1d", "last day"), ("old", "older than a day")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() in self.BANDS:
            return queryset.filter(created_at__gte=now - self.BANDS[self.value()])
        if self.value() == "old":
            return queryset.filter(created_at__lt=now - self.BANDS["1d"])
        return queryset


def _age(order: Order) -> str:
    seconds = ((order.finished_at or timezone.now()) - order.created_at).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


FAILURES = {"InventoryRejected", "PaymentDeclined", "ShipmentFailed", "OrderCancelled"}


def _row_class(event_type: str) -> str:
    if event_type == "MessageParked":
        return "parked"
    return "failure" if event_type in FAILURES else ""


def _service_link(service: str, path: str, text: str) -> SafeString:
    return format_html('<a href="{}{}">{}</a>', settings.SAGA_SERVICE_URLS[service], path, text)


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    """Saga state is read-only here: orders change only through events and services."""

    list_display = ("id", "status", "customer_id", "total", "age", "failure_reason", "created_at")
    list_filter = ("status", AgeFilter)
    search_fields = ("id", "customer_id")
    list_per_page = 50
    inlines = [OrderLineInline]

    class Media:
        css = {"all": ["saga/admin.css"]}

    readonly_fields = (
        "id",
        "status",
        "customer_id",
        "total",
        "failure_reason",
        "age",
        "created_at",
        "deadline_at",
        "finished_at",
        "shipping_address",
        "compensation_status",
        "saga_timeline",
        "related_records",
    )
    fieldsets = (
        (None, {"fields": ("id", "status", "failure_reason", "customer_id", "total", "destination")}),
        ("Time (UTC)", {"fields": ("created", "deadline", "finished", "age")}),
        ("Saga", {"fields": ("compensation_status", "saga_timeline", "related_records")}),
    )

    @admin.display(description="age")
    def age(self, order: Order) -> str:
        return _age(order)

    @admin.display(description="created")
    def created(self, order: Order) -> str:
        return order.created_at.isoformat(timespec="milliseconds")

    @admin.display(description="deadline")
    def deadline(self, order: Order) -> str:
        return order.deadline_at.isoformat(timespec="milliseconds")

    @admin.display(description="finished")
    def finished(self, order: Order) -> str:
        return order.finished_at.isoformat(timespec="milliseconds") if order.finished_at else "—"

    @admin.display(description="ship to")
    def destination(self, order: Order) -> str:
        address = order.shipping_address or {}
        parts = [address.get(k) for k in ("name", "line1", "postal_code", "city", "country")]
        return ", ".join(p for p in parts if p)

    @admin.display(description="compensation")
    def compensation_status(self, order: Order) -> str:
        if not order.compensations_expected:
            return "none needed" if order.status != "COMPENSATING" else "waiting"
        pending = order.compensations_pending
        confirmed = [c for c in order.compensations_expected if c not in pending]
        text = f"confirmed: {', '.join(confirmed) or '—'}"
        return f"{text}; still waiting for: {', '.join(pending)}" if pending else f"{text} (complete)"

    @admin.display(description="timeline")
    def saga_timeline(self, order: Order) -> SafeString:
        rows = format_html_join(
            "",
            '<tr class="{}"><td>{}</td><td><b>{}</b></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
            "<td><code>{}</code></td></tr>",
            (
                (
                    _row_class(step["event_type"]),
                    index,
                    step["event_type"],
                    step["service"],
                    step["at"].strftime("%H:%M:%S.%f")[:-3],
                    f"+{step['since_previous_ms']:.0f} ms" if step["since_previous_ms"] is not None else "",
                    step["detail"],
                    step["event_id"],
                )
                for index, step in enumerate(selectors.order_timeline(order=order), start=1)
            ),
        )
        return format_html(
            '<table class="saga-timeline"><thead><tr><th>#</th><th>event</th><th>service</th>'
            "<th>at (UTC)</th><th>since previous</th><th>detail</th><th>event id</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="in the other services")
    def related_records(self, order: Order) -> SafeString:
        oid = str(order.id)
        links = [
            _service_link("inventory", f"/admin/inventory/reservation/?q={oid}", "reservations"),
            _service_link("payment", f"/admin/payments/payment/?q={oid}", "payments and refunds"),
            _service_link("shipping", f"/admin/shipping/shipment/?q={oid}", "shipments"),
        ] + [
            _service_link(service, f"/admin/messaging/parkedmessage/?q={oid}", f"parked in {service}")
            for service in ("order", "inventory", "payment", "shipping")
        ]
        return format_html_join(" · ", "{}", ((link,) for link in links))


@admin.register(StuckOrder)
class StuckOrderAdmin(OrderAdmin):
    """Non-terminal orders past their deadline, oldest first."""

    list_display = ("id", "status", "age", "deadline_at", "failure_reason", "customer_id")
    list_filter = ()
    ordering = ("created_at",)

    def get_queryset(self, request):
        return selectors.order_stuck()
