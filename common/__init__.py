"""What the four services share, by concern; no module here imports a service.

- ``common.messaging``: the saga messaging core, and the Django app of its tables — the
  event envelope and its contracts and signatures, the handler registry and the broker
  topology derived from it, the outbox with its pusher and relay, the inbox, the
  group-commit consumer with its retry tiers and parking lot, and the purge.
- ``common.web``: the REST plumbing every service's API is built on (authentication,
  errors, pagination, health, OpenAPI, gunicorn's hook) and the read-only admin base.
- ``common.observability``: metrics, traces and logs, and the event being handled that
  stamps them.
- ``common.settings`` fills each service's settings module; ``common.services`` is the
  one list of the four services.

What differs per service arrives by registration: handlers in each app's handlers.py,
its settings in its settings.py, the order app's stuck-saga gauge in its AppConfig.
The operator tools that span all four databases (the audit, the saga graph) live in
``tools/``, outside this package.
"""
