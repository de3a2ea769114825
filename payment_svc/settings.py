"""Settings of the payment service; everything shared comes from common/settings.py."""

from common.settings import configure

configure(globals(), service="payment", domain_app="payment_svc.payments")
