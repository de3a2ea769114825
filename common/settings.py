"""Settings shared by the four services.

A service's ``settings.py`` calls :func:`configure` with what makes it different
(its name, its domain app, its port); everything else is decided here, once.
All values can be overridden from the environment (each named where its mechanism is described, in docs/).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from common.observability.logs import logging_config
from common.services import DEFAULT_PORTS
from common.services import port as service_port

BASE_DIR = Path(__file__).resolve().parent.parent

DEV_API_TOKEN = "dev-token"  # noqa: S105 - documented development default
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"  # noqa: S105

SERVICE_PORTS = DEFAULT_PORTS  # service → port, unless SAGA_<SERVICE>_PORT says


def env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_number(name: str, default: Any, kind: type, what: str) -> Any:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not {what}") from exc


def env_int(name: str, default: int) -> int:
    return _env_number(name, default, int, "an integer")


def env_float(name: str, default: float) -> float:
    return _env_number(name, default, float, "a number")


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


def api_urls(pairs: list[str]) -> dict[str, str]:
    """``["order=http://…", …]`` → ``{"order": "http://…"}`` (an unknown service is an error)."""
    found = {}
    for pair in pairs:
        name, _, url = pair.partition("=")
        if name.strip() not in SERVICE_PORTS or not url.strip():
            raise RuntimeError(f"SAGA_SERVICE_API_URLS: {pair!r} is not <service>=<url>")
        found[name.strip()] = url.strip().rstrip("/")
    return found


def dev_amqp_password(service: str) -> str:
    return f"saga_{service}"  # documented development default, refused without DEBUG


def broker_url(service: str) -> str:
    """Where ``service`` connects to RabbitMQ, as its own user (least privilege).

    ``SAGA_BROKER_URL``, when set, wins (one URL, or several separated by ``;`` to fail
    over across a cluster's nodes); otherwise the URL is built from
    ``SAGA_<SERVICE>_AMQP_USER``/``_PASSWORD`` (default ``saga_<service>``, the user
    ``make up`` creates with rights on this service's queues only) and
    ``SAGA_BROKER_HOST``/``_PORT``/``_VHOST``. ``SAGA_BROKER_HOST`` may list a cluster's
    nodes, comma-separated (``host`` or ``host:port``): the URL then names each node in
    turn, and kombu fails over to the next when its node goes (``make cluster``).
    """
    explicit = os.environ.get("SAGA_BROKER_URL")
    if explicit:
        return explicit
    upper = service.upper()
    user = quote(env(f"SAGA_{upper}_AMQP_USER", f"saga_{service}"), safe="")
    password = quote(env(f"SAGA_{upper}_AMQP_PASSWORD", dev_amqp_password(service)), safe="")
    port = env_int("SAGA_BROKER_PORT", env_int("SAGA_AMQP_PORT", 5672))
    vhost = quote(env("SAGA_BROKER_VHOST", "saga"), safe="")
    nodes = [node if ":" in node else f"{node}:{port}" for node in env_list("SAGA_BROKER_HOST", "127.0.0.1")]
    return ";".join(f"amqp://{user}:{password}@{node}/{vhost}" for node in nodes)


def retry_delays_ms() -> list[int]:
    """Delay of each retry tier, in milliseconds (``SAGA_RETRY_DELAYS``, seconds)."""
    delays = [float(x) for x in env_list("SAGA_RETRY_DELAYS", "1,5,30")]
    if not delays or any(d <= 0 for d in delays):
        raise ValueError("SAGA_RETRY_DELAYS must be a comma-separated list of positive seconds")
    return [int(d * 1000) for d in delays]


def dev_event_key(producer: str) -> str:
    return f"dev-event-key-{producer}"  # documented development default, refused without DEBUG


def event_keys(*, debug: bool) -> dict[str, list[bytes]]:
    """Each producer's event signing keys (``SAGA_EVENT_KEY_<PRODUCER>``, comma-separated).

    The first key signs, every one verifies (rotation). With DEBUG on, a producer without
    a key gets its development default; without DEBUG, only the keys set are known.
    """
    keys: dict[str, list[bytes]] = {}
    for producer in SERVICE_PORTS:
        values = env_list(f"SAGA_EVENT_KEY_{producer.upper()}", dev_event_key(producer) if debug else "")
        if values:
            keys[producer] = [value.encode() for value in values]
    return keys


def database_params(service: str) -> dict[str, str]:
    """How to reach a service's database (psycopg2's keywords): Django's DATABASES below,
    and the tools that read the four databases (the audit, the bench), use this one rule."""
    upper = service.upper()
    return {
        "dbname": env(f"SAGA_{upper}_DB_NAME", f"saga_{service}"),
        "user": env(f"SAGA_{upper}_DB_USER", f"saga_{service}"),
        "password": env(f"SAGA_{upper}_DB_PASSWORD", f"saga_{service}"),
        "host": env("SAGA_DB_HOST", "127.0.0.1"),
        "port": env("SAGA_DB_PORT", "5432"),
    }


def configure(namespace: dict[str, Any], *, service: str, domain_app: str) -> None:
    """Fill a service's settings module namespace with the shared settings."""
    upper = service.upper()
    debug = env_bool("SAGA_DEBUG", True)
    secret_key = env("SAGA_SECRET_KEY", DEV_SECRET_KEY)
    api_token = env("SAGA_API_TOKEN", DEV_API_TOKEN)
    service_urls = {  # where an operator's browser reaches each service
        name: env(f"SAGA_{name.upper()}_URL", f"http://127.0.0.1:{service_port(name)}")
        for name in SERVICE_PORTS
    }
    if not debug and (secret_key == DEV_SECRET_KEY or api_token == DEV_API_TOKEN):
        raise RuntimeError(
            "SAGA_DEBUG is off but SAGA_SECRET_KEY or SAGA_API_TOKEN still has its "
            "development default; set both in the environment."
        )
    signing_keys = event_keys(debug=debug)
    if not debug:
        defaults = []
        if database_params(service)["password"] == f"saga_{service}":
            defaults.append(f"SAGA_{upper}_DB_PASSWORD")
        amqp_password = env(f"SAGA_{upper}_AMQP_PASSWORD", dev_amqp_password(service))
        if not os.environ.get("SAGA_BROKER_URL") and amqp_password == dev_amqp_password(service):
            defaults.append(f"SAGA_{upper}_AMQP_PASSWORD")
        if defaults:
            raise RuntimeError(
                f"SAGA_DEBUG is off but {', '.join(defaults)} is unset or a development default"
            )
        if service not in signing_keys:
            raise RuntimeError(
                f"SAGA_DEBUG is off and SAGA_EVENT_KEY_{upper} is not set: {service} cannot sign"
            )
        weak = [
            p
            for p, keys in signing_keys.items()
            if dev_event_key(p).encode() in keys or min(map(len, keys)) < 16
        ]
        if weak:
            raise RuntimeError(
                "SAGA_DEBUG is off but the event key of "
                + ", ".join(sorted(weak))
                + " is a development default or shorter than 16 bytes"
            )
    db = database_params(service)
    namespace.update(
        SERVICE_NAME=service,
        SAGA_EVENT_KEYS=signing_keys,
        SERVICE_PORT=env_int(f"SAGA_{upper}_PORT", SERVICE_PORTS[service]),
        BASE_DIR=BASE_DIR,
        SECRET_KEY=secret_key,
        DEBUG=debug,
        ALLOWED_HOSTS=env_list("SAGA_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver"),
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
            "rest_framework",
            "drf_spectacular",
            "drf_spectacular_sidecar",
            "django_prometheus",
            "common.messaging",
            domain_app,
        ],
        MIDDLEWARE=[
            "django_prometheus.middleware.PrometheusBeforeMiddleware",
            "common.web.api.BodySizeLimitMiddleware",
            "django.middleware.security.SecurityMiddleware",
            "whitenoise.middleware.WhiteNoiseMiddleware",
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
            "django_prometheus.middleware.PrometheusAfterMiddleware",
        ],
        ROOT_URLCONF=f"{service}_svc.urls",
        WSGI_APPLICATION=f"{service}_svc.wsgi.application",
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "DIRS": [],
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": db["dbname"],
                "USER": db["user"],
                "PASSWORD": db["password"],
                "HOST": db["host"],
                "PORT": db["port"],
                # Persistent connections: workers and relays handle thousands of
                # short transactions; reconnecting each time would dominate.
                "CONN_MAX_AGE": None,
                "CONN_HEALTH_CHECKS": True,
                "OPTIONS": {
                    # A stuck lock or runaway query surfaces as an error (which the
                    # consumer retries through the tiers) instead of a hang.
                    "options": (
                        f"-c lock_timeout={env_int('SAGA_DB_LOCK_TIMEOUT_MS', 2000)} "
                        f"-c statement_timeout={env_int('SAGA_DB_STATEMENT_TIMEOUT_MS', 10000)} "
                        # Our prepared statements (common/messaging/statements.py) are planned once.
                        "-c plan_cache_mode=force_generic_plan"
                    ),
                    "connect_timeout": 5,
                },
                "TEST": {"NAME": f"test_{db['dbname']}"},
            }
        },
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
        TIME_ZONE="UTC",
        LANGUAGE_CODE="en-us",
        # Four services on one host: distinct cookies, or logging into one admin logs
        # you out of the others (browsers share cookies across ports).
        SESSION_COOKIE_NAME=f"{service}_sessionid",
        CSRF_COOKIE_NAME=f"{service}_csrftoken",
        STATIC_URL="/static/",
        STATIC_ROOT=BASE_DIR / "var" / "static",
        DATA_UPLOAD_MAX_MEMORY_SIZE=1024 * 1024,
        DATA_UPLOAD_MAX_NUMBER_FIELDS=20000,
        REST_FRAMEWORK={
            "DEFAULT_AUTHENTICATION_CLASSES": ["common.web.api.BearerTokenAuthentication"],
            "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
            "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
            "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
            "DEFAULT_PAGINATION_CLASS": "common.web.api.Pagination",
            "PAGE_SIZE": 50,
            "EXCEPTION_HANDLER": "common.web.api.exception_handler",
            "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
            "UNAUTHENTICATED_USER": None,
            "COERCE_DECIMAL_TO_STRING": True,
        },
        SPECTACULAR_SETTINGS={
            "TITLE": f"{service.capitalize()} service API",
            "DESCRIPTION": f"The {service} service of the order saga platform.",
            "VERSION": "1.0.0",
            "SWAGGER_UI_DIST": "SIDECAR",
            "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
            "REDOC_DIST": "SIDECAR",
            "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
            "SERVE_AUTHENTICATION": [],
        },
        SAGA_API_TOKEN=api_token,
        # Where an operator's browser reaches each service (admin links across services).
        SAGA_SERVICE_URLS=service_urls,
        # Where a service reaches another's API (the saga map asks each for its figures):
        # SAGA_SERVICE_API_URLS="order=http://order-web:8001,payment=…", else the browser's URL.
        SAGA_SERVICE_API_URLS=service_urls | api_urls(env_list("SAGA_SERVICE_API_URLS", "")),
        SAGA_HANDLERS=f"{domain_app}.handlers.registry",
        SAGA_QUEUE_TYPE=env("SAGA_QUEUE_TYPE", "classic"),
        # Quorum queues only: deliveries of one message from <service>.events before the
        # broker parks it (common/messaging/topology.py).
        SAGA_DELIVERY_LIMIT=env_int("SAGA_DELIVERY_LIMIT", 20),
        SAGA_BROKER_URL=broker_url(service),
        SAGA_RETRY_DELAYS_MS=retry_delays_ms(),
        SAGA_OCC_MAX_ATTEMPTS=env_int("SAGA_OCC_MAX_ATTEMPTS", 8),
        SAGA_RELAY_BATCH=env_int("SAGA_RELAY_BATCH", 200),
        SAGA_RELAY_SWEEP_SECONDS=env_float("SAGA_RELAY_SWEEP_SECONDS", 1.0),
        # Publish each event right after its transaction commits, from a per-process
        # publishing thread (common/messaging/direct.py); the relay then only sweeps rows older than
        # the grace period. Off: the relay publishes everything, woken by NOTIFY.
        SAGA_PUBLISH_ON_COMMIT=env_bool("SAGA_PUBLISH_ON_COMMIT", True),
        SAGA_RELAY_GRACE_SECONDS=env_float("SAGA_RELAY_GRACE_SECONDS", 2.0),
        SAGA_PREFETCH=env_int("SAGA_PREFETCH", 32),
        # Group commit: at most this many deliveries share one transaction and one ack
        # (common/messaging/consumer.py); 1 handles each on its own.
        SAGA_BATCH_MAX=env_int("SAGA_BATCH_MAX", 16),
        # The hot paths' SQL is prepared once per connection (common/messaging/statements.py); off for
        # a pooler that does not keep sessions (PgBouncer in transaction mode).
        SAGA_DB_PREPARE=env_bool("SAGA_DB_PREPARE", True),
        # The order POST answered in front of Django when it is plainly valid (common/web/wsgi.py).
        SAGA_LEAN_ROUTES=env_bool("SAGA_LEAN_ROUTES", True),
        # Housekeeping (common/messaging/purge.py, run by each relay): an inbox row is kept
        # sum(SAGA_RETRY_DELAYS) + this margin (a parked copy can be replayed days later).
        SAGA_INBOX_REPLAY_MARGIN_SECONDS=env_float("SAGA_INBOX_REPLAY_MARGIN_SECONDS", 7 * 24 * 3600.0),
        SAGA_OUTBOX_RETENTION_SECONDS=env_float("SAGA_OUTBOX_RETENTION_SECONDS", 24 * 3600.0),
        SAGA_PURGE_INTERVAL_SECONDS=env_float("SAGA_PURGE_INTERVAL_SECONDS", 600.0),
        SAGA_PURGE_BATCH=env_int("SAGA_PURGE_BATCH", 5000),
        SAGA_PURGE_TIME_BUDGET_SECONDS=env_float("SAGA_PURGE_TIME_BUDGET_SECONDS", 2.0),
        # The saga map (common/messaging/flow.py): each relay rolls its service's figures up
        # every SAGA_FLOW_SECONDS (0: off) and keeps SAGA_FLOW_RETENTION_HOURS of minutes.
        SAGA_FLOW_SECONDS=env_float("SAGA_FLOW_SECONDS", 5.0),
        SAGA_FLOW_RETENTION_HOURS=env_int("SAGA_FLOW_RETENTION_HOURS", 48),
        # An event body larger than this is parked unread (events are small: < 10 KiB).
        SAGA_MAX_EVENT_BYTES=env_int("SAGA_MAX_EVENT_BYTES", 256 * 1024),
        # Celery: the worker hosts our event consumer (a bootstep) and runs the
        # service's periodic tasks; see common/messaging/celery.py.
        CELERY_BROKER_URL=broker_url(service),
        CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP=True,
        # A worker learns that its broker node is gone (cut off, not closed) after about
        # two heartbeats, then fails over to the next node; Celery's default is 120 s. (The
        # publishers keep 30 s: a publish that gets no confirm fails over by itself.)
        CELERY_BROKER_HEARTBEAT=env_int("SAGA_BROKER_HEARTBEAT", 10),
        CELERY_BROKER_TRANSPORT_OPTIONS={"confirm_publish": True},
        CELERY_TASK_DEFAULT_QUEUE=f"{service}.tasks",
        # On a cluster the task queue (the deadline sweep) must outlive a node too; classic
        # declares it without arguments, exactly as before.
        CELERY_TASK_DEFAULT_QUEUE_TYPE=env("SAGA_QUEUE_TYPE", "classic"),
        CELERY_TASK_ACKS_LATE=True,
        CELERY_TASK_REJECT_ON_WORKER_LOST=True,
        CELERY_WORKER_PREFETCH_MULTIPLIER=1,
        CELERY_WORKER_SEND_TASK_EVENTS=True,
        CELERY_TASK_SEND_SENT_EVENT=True,
        CELERY_TASK_IGNORE_RESULT=True,
        CELERY_WORKER_HIJACK_ROOT_LOGGER=False,
        CELERY_WORKER_CONSUMER="common.messaging.celery:SagaConsumer",
        # Remote control's queue (<worker>.celery.pidbox) not exclusive: a worker cut off
        # from its node reconnects while the broker still holds its old connection, and an
        # exclusive queue then fails the declare (RESOURCE_LOCKED) and kills the worker,
        # again at every restart, until the broker drops that connection (make
        # cluster-chaos, docs/cluster.md). Unique node names keep each queue to one worker;
        # it still expires 10 s after its worker is gone.
        CELERY_CONTROL_QUEUE_EXCLUSIVE=False,
        LOGGING=logging_config(service, env("SAGA_LOG_LEVEL", "INFO")),
    )
