import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "order_svc.settings")

from common.messaging.celery import make_celery  # noqa: E402

app = make_celery("order")
