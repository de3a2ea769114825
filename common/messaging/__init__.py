"""The saga messaging core, and the Django app (``messaging``) of its tables.

An event is an ``Envelope`` (envelope.py) checked against its contract (contracts.py)
and signed by its producer (signing.py). Each service registers its handlers
(registry.py); the broker topology — exchanges, the service's queue and bindings, retry
tiers, parking lot — is derived from those registrations (topology.py, broker.py). A
saga step runs in one transaction (sagas.py ``@saga_step``, groupcommit.py) that writes
its effect, its inbox claim (inbox.py) and its outbox rows (outbox.py); after commit the
pusher (direct.py) publishes them, and the relay (relay.py) publishes whatever it
missed. The consumer (consumer.py), a bootstep of each service's Celery worker
(celery.py), handles a batch of deliveries per transaction, retries through the tiers
and parks what cannot be handled (parking.py). purge.py keeps the tables small;
faults.py injects failures for the chaos tests; statements.py prepares the hot SQL.
"""
