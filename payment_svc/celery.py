import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "payment_svc.settings")

from common.messaging.celery import make_celery  # noqa: E402

app = make_celery("payment")
