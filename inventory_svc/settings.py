"""Settings of the inventory service; everything shared comes from common/settings.py."""

from common.settings import configure

configure(globals(), service="inventory", domain_app="inventory_svc.inventory")
