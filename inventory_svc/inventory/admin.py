from django.contrib import admin

from common.admin import ReadOnlyAdmin
from inventory_svc.inventory.models import Product, Reservation

admin.site.site_header = "Inventory service"


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("sku", "name", "price", "available", "reserved", "received", "version")
    search_fields = ("sku", "name")
    readonly_fields = ("available", "reserved", "received", "version", "created_at", "updated_at")


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdmin):
    list_display = ("order_id", "product", "quantity", "unit_price", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("order_id", "product__sku")
    readonly_fields = [f.name for f in Reservation._meta.fields]
