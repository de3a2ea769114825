"""Ids minted here are UUIDv7: valid UUIDs for the contracts, and increasing in creation order."""

from __future__ import annotations

import uuid

from common.messaging.envelope import Envelope
from common.messaging.ids import new_id, new_id_str


def test_new_ids_are_version_7_plain_uuids() -> None:
    ident = new_id()
    assert type(ident) is uuid.UUID  # not a subclass: psycopg2 and Django adapt it as is
    assert ident.version == 7
    assert ident.variant == uuid.RFC_4122
    assert uuid.UUID(new_id_str()).version == 7


def test_new_ids_increase_in_creation_order() -> None:
    # What keeps index inserts at the right-hand edge of a B-tree: each id sorts after the
    # one minted before it, in the same millisecond too.
    ids = [new_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_events_get_time_ordered_ids() -> None:
    first = Envelope(event_type="OrderPlaced", saga_id=str(new_id()), producer="order", payload={})
    second = Envelope(event_type="OrderPlaced", saga_id=str(new_id()), producer="order", payload={})
    assert uuid.UUID(first.event_id).version == 7
    assert first.event_id < second.event_id
