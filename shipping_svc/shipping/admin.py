from django.contrib import admin

from common.admin import ReadOnlyAdmin
from shipping_svc.shipping.models import Destination, Shipment

admin.site.site_header = "Shipping service"


@admin.register(Shipment)
class ShipmentAdmin(ReadOnlyAdmin):
    list_display = ("order_id", "status", "country", "created_at")
    list_filter = ("status", "country")
    search_fields = ("order_id",)
    readonly_fields = [f.name for f in Shipment._meta.fields]


@admin.register(Destination)
class DestinationAdmin(ReadOnlyAdmin):
    list_display = ("order_id", "country", "created_at")
    search_fields = ("order_id",)
    readonly_fields = ("order_id", "country", "address", "created_at")
