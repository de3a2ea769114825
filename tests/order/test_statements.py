"""Named statements on a real PostgreSQL: prepared once per connection, again after a
reconnect or when the server lost them, and sent as they are when preparing is off."""

from __future__ import annotations

import pytest
from django.db import connection

from common.messaging.statements import Statement

pytestmark = pytest.mark.django_db(transaction=True)

ANSWER = Statement("test_answer", "SELECT %s::int + 1, cardinality(%s)", ("integer", "uuid[]"))
IDS = ["0196f3c1-0000-7000-8000-000000000001", "0196f3c1-0000-7000-8000-000000000002"]


def prepared_here() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        return {name for (name,) in cursor.fetchall()}


def answer() -> tuple:
    with connection.cursor() as cursor:
        return ANSWER.execute(cursor, [41, IDS]).fetchone()


def test_prepared_once_per_connection_and_again_after_a_reconnect() -> None:
    assert answer() == (42, 2)
    assert answer() == (42, 2)
    assert ANSWER.prepared_name in prepared_here()
    connection.close()
    assert ANSWER.prepared_name not in prepared_here()  # a new connection: nothing prepared
    assert answer() == (42, 2)
    assert ANSWER.prepared_name in prepared_here()


def test_a_statement_the_server_lost_fails_once_then_is_prepared_afresh() -> None:
    assert answer() == (42, 2)
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # as DISCARD ALL or a pooler would
    with pytest.raises(Exception, match="does not exist"):
        answer()
    assert answer() == (42, 2)  # under a new name


def test_with_preparing_off_the_statement_is_sent_as_it_is(settings) -> None:
    settings.SAGA_DB_PREPARE = False
    connection.close()  # a fresh session, with nothing prepared yet
    assert answer() == (42, 2)
    assert not {name for name in prepared_here() if name.startswith("saga_test_answer")}
