"""Settings of the order service; everything shared comes from common/settings.py."""

from common.settings import configure

configure(globals(), service="order", domain_app="order_svc.orders")
