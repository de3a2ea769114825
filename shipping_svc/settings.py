"""Settings of the shipping service; everything shared comes from common/settings.py."""

from common.settings import configure

configure(globals(), service="shipping", domain_app="shipping_svc.shipping")
