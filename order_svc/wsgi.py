import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "order_svc.settings")
django_application = get_wsgi_application()

from common.web.wsgi import LeanRoute, LeanRoutes  # noqa: E402 - needs Django set up
from order_svc.orders.api import cancel_lean, place_lean  # noqa: E402

# The order POST, which starts every saga, and a client's cancel, in front of Django when
# they are plainly valid.
ROUTES = [
    LeanRoute("POST", "order-list", place_lean, allow="GET, POST, HEAD, OPTIONS"),
    LeanRoute("POST", "order-cancel", cancel_lean, allow="POST, OPTIONS", argument="pk", empty_body=True),
]
application = LeanRoutes(django_application, ROUTES)
