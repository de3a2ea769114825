from django.contrib import admin

from common.admin import ReadOnlyAdmin
from payment_svc.payments.models import Account, Payment

admin.site.site_header = "Payment service"


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("customer_id", "balance", "opening_balance", "updated_at")
    search_fields = ("customer_id",)
    readonly_fields = ("balance", "opening_balance", "created_at", "updated_at")


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ("order_id", "customer_id", "kind", "amount", "created_at")
    list_filter = ("kind",)
    search_fields = ("order_id", "customer_id")
    readonly_fields = [f.name for f in Payment._meta.fields]
