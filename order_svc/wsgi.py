import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "order_svc.settings")
django_application = get_wsgi_application()

from common.web.wsgi import LeanRoute, LeanRoutes  # noqa: E402 - needs Django set up
from order_svc.orders.api import place_lean  # noqa: E402

# The order POST, which starts every saga, in front of Django when it is plainly valid.
application = LeanRoutes(
    django_application, [LeanRoute("POST", "order-list", place_lean, allow="GET, POST, HEAD, OPTIONS")]
)
