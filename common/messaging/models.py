from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


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

    class Meta:
        db_table = "messaging_inbox"
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"
