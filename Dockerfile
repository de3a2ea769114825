# One image for every process of the order saga platform (the four services' web
# servers, Celery workers and outbox relays, the migrate job, Flower); compose.yaml
# picks the process with `command:`. Build: docker compose build (or docker build -t
# order-saga-platform .).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# A non-root user to run as; the code stays owned by root (read-only to it).
RUN groupadd --system --gid 10001 saga \
    && useradd --system --uid 10001 --gid saga --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin saga

# Dependencies first, so a code change does not reinstall them (all are wheels:
# psycopg2-binary needs no compiler).
COPY requirements.txt ./
RUN pip install -r requirements.txt
# Graphviz's dot lays out the saga map on the Order admin's home (order_svc/orders/sagamap.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends graphviz \
    && rm -rf /var/lib/apt/lists/*

# Only what the services run (.dockerignore also keeps a developer's .venv/, var/ and
# .git/ out of the build context). The other deploy/ files are mounted by compose.yaml
# into the images that read them (RabbitMQ, Prometheus, the gateway, PostgreSQL).
COPY manage.py pyproject.toml ./
COPY deploy/docker-entrypoint.sh ./deploy/docker-entrypoint.sh
COPY common ./common
COPY contracts ./contracts
COPY order_svc ./order_svc
COPY payment_svc ./payment_svc
COPY inventory_svc ./inventory_svc
COPY shipping_svc ./shipping_svc
# The operator tools: the choreography graph (./manage.py saga graph, the saga map) and the audit.
COPY tools ./tools

# Static files (admin, API docs) into var/static, served by WhiteNoise. Needs no
# database or broker: settings only read the environment.
RUN python manage.py order collectstatic --noinput -v 0 \
    && mkdir -p var/run var/log \
    && chown -R saga:saga var

USER saga

# order, payment, inventory, shipping web servers; Flower; a worker's or relay's own
# /metrics (SAGA_METRICS_PORT, set by compose.yaml).
EXPOSE 8001 8002 8003 8004 5555 9100

# Adds the container's address to SAGA_ALLOWED_HOSTS (Prometheus scrapes replicas by IP),
# then runs the command; run through sh, so it needs no execute bit.
ENTRYPOINT ["sh", "/app/deploy/docker-entrypoint.sh"]

# compose.yaml sets the command of each container; by default run the order API.
CMD ["gunicorn", "order_svc.wsgi", "-b", "0.0.0.0:8001", "-w", "2", "-k", "gthread", "--threads", "4"]
