"""Settings of the shipping service; everything shared comes from common/settings.py."""

from common.settings import configure, env_list

configure(globals(), service="shipping", domain_app="shipping_svc.shipping")

# Where shipping delivers: every country ("*") or the ones listed, except the unserved.
SHIPPING_SERVED_COUNTRIES = env_list("SHIPPING_SERVED_COUNTRIES", "*")
SHIPPING_UNSERVED_COUNTRIES = env_list("SHIPPING_UNSERVED_COUNTRIES", "AQ")
