from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone


class ParkedStatus(models.TextChoices):
    PARKED = "PARKED"
    REPLAYED = "REPLAYED"
    DISCARDED = "DISCARDED"


class OutboxMessage(models.Model):
    """An event written in the same transaction as the state change that caused it.

    The relay publishes rows whose ``published_at`` is null, oldest first, and
    sets it once the broker confirmed the publish.
    """

    event_id = models.UUIDField(unique=True)
    event_type = models.CharField(max_length=64)
    routing_key = models.CharField(max_length=128)
    saga_id = models.UUIDField(db_index=True)
    body = models.TextField(help_text="The envelope, exactly as published (JSON).")
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)
    publish_attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "messaging_outbox"
        ordering = ["id"]
        indexes = [
            models.Index(fields=["id"], condition=Q(published_at__isnull=True), name="outbox_unpublished_idx")
        ]

    def __str__(self) -> str:
        state = "published" if self.published_at else "pending"
        return f"{self.event_type} {self.event_id} ({state})"


class InboxMessage(models.Model):
    """An event this service has handled; inserted in the handler's own transaction."""

    event_id = models.UUIDField(primary_key=True)
    event_type = models.CharField(max_length=64)
    saga_id = models.UUIDField(db_index=True)
    producer = models.CharField(max_length=32)
    received_at = models.DateTimeField(default=timezone.now)
    # For the saga map's figures (common/messaging/flow.py): when the producer wrote the
    # event (the lag is received_at - occurred_at) and how many retry tiers it went through.
    occurred_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(db_default=0)

    class Meta:
        db_table = "messaging_inbox"
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


class ParkedMessage(models.Model):
    """A message this service could not handle, copied from its ``<service>.parked`` queue.

    The queue is where the consumer puts it (that works while the database is down);
    the worker then moves it here so operators can list, inspect, replay and discard it.
    """

    delivery_key = models.CharField(
        max_length=64, unique=True, help_text="Hash of body and park headers: ingest once."
    )
    event_id = models.UUIDField(null=True, blank=True, db_index=True)
    event_type = models.CharField(max_length=64, blank=True, default="")
    saga_id = models.UUIDField(null=True, blank=True, db_index=True)
    reason = models.TextField()
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    headers = models.JSONField(default=dict, help_text="The original headers of the message.")
    body = models.BinaryField(help_text="The message body, byte for byte.")
    parked_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=16, choices=ParkedStatus.choices, default=ParkedStatus.PARKED)

    class Meta:
        db_table = "messaging_parked"
        ordering = ["-parked_at", "-id"]

    def __str__(self) -> str:
        return f"parked #{self.pk} {self.event_type or '(unreadable)'} ({self.status})"

    @property
    def body_text(self) -> str:
        return bytes(self.body).decode("utf-8", errors="backslashreplace")


class ParkedAction(models.Model):
    """Who replayed or discarded which parked message, and when (an audit trail)."""

    message = models.ForeignKey(ParkedMessage, on_delete=models.PROTECT, related_name="actions")
    action = models.CharField(max_length=16)
    operator = models.CharField(max_length=150)
    note = models.TextField(blank=True, default="")
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "messaging_parked_action"
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.action} of #{self.message_id} by {self.operator}"


class CancelledSaga(models.Model):
    """This service learnt that the saga was cancelled: a late forward step is refused."""

    saga_id = models.UUIDField(primary_key=True)
    reason = models.TextField(blank=True, default="")
    cancelled_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "messaging_cancelled_saga"

    def __str__(self) -> str:
        return f"saga {self.saga_id} cancelled"


class FlowMinute(models.Model):
    """One minute of what this service did, rolled up from its own rows for the saga map.

    ``kind`` "handled": the deliveries it handled from ``producer`` of the event type ``name``
    (from the inbox), with their retries and a histogram of their lag, published to handled,
    over the bounds of common/messaging/flow.py. Other kinds are registered by a service (the
    Order service counts its orders by status). Written by the relay (common/messaging/flow.py).
    """

    minute = models.DateTimeField()
    kind = models.CharField(max_length=16)
    producer = models.CharField(max_length=32, blank=True, default="")
    name = models.CharField(max_length=64)
    count = models.BigIntegerField(default=0)
    attempts = models.BigIntegerField(default=0)
    lag_buckets = ArrayField(models.IntegerField(), null=True, blank=True)

    class Meta:
        db_table = "messaging_flow"
        constraints = [
            models.UniqueConstraint(fields=["minute", "kind", "producer", "name"], name="flow_minute_key")
        ]
        indexes = [models.Index(fields=["kind", "minute"], name="flow_kind_minute")]

    def __str__(self) -> str:
        return f"{self.minute:%H:%M} {self.kind} {self.producer}/{self.name}: {self.count}"


class ProcessBeat(models.Model):
    """A long-running process of this service saying it is alive (the relay, every few seconds)."""

    name = models.CharField(max_length=128, primary_key=True, help_text="kind@host:pid")
    kind = models.CharField(max_length=16)
    beat_at = models.DateTimeField()

    class Meta:
        db_table = "messaging_process_beat"

    def __str__(self) -> str:
        return f"{self.name} at {self.beat_at:%H:%M:%S}"
