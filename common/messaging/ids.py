"""New identifiers: UUIDv7 (RFC 9562), time-ordered, for every id this platform mints.

Event ids, order (saga) ids and row ids end up as keys of B-tree indexes (the inbox's
primary key, the outbox's ``event_id`` and ``saga_id``, the timeline's ``event_id``...).
A random UUIDv4 lands on a random leaf page of each of those indexes: once the indexes
outgrow memory every insert touches a different page, and after each checkpoint the
first change to a page writes the whole 8 kB page to the write-ahead log. A UUIDv7
starts with a millisecond timestamp, so new keys go to the right-hand edge of the index,
the same few pages over and over (``make bench`` prints the WAL per saga).

They are still UUIDs: the contracts accept any version, and ids minted before (v4) stay
valid. A UUIDv7 reveals when it was created (to the millisecond) — which the envelope's
``occurred_at`` and the order's ``created_at`` already tell anyone who can see them.
"""

from __future__ import annotations

import uuid

from uuid6 import uuid7


def new_id() -> uuid.UUID:
    """A new UUIDv7, as a plain ``uuid.UUID`` (what Django and psycopg2 expect)."""
    return uuid.UUID(int=uuid7().int)


def new_id_str() -> str:
    return str(new_id())
