"""Named statements on a real PostgreSQL: prepared once per connection, again after a
reconnect or when the server lost them, and sent as they are when preparing is off."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from common.messaging.statements import Statement, statement_cursor

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


NOW = Statement("test_now", "SELECT now(), pg_backend_pid() + %s", ("integer",))


def test_the_kept_cursor_serves_every_statement_of_a_connection_and_a_new_one_after_a_reconnect() -> None:
    with statement_cursor() as first:
        assert ANSWER.execute(first, [41, IDS]).fetchone() == (42, 2)
    with statement_cursor() as again:
        assert again is first  # kept, not built and closed around each statement
        stamp, _ = NOW.execute(again, [0]).fetchone()
    assert stamp.tzinfo is connection.timezone  # as Django's own cursor gives timestamps (USE_TZ)
    assert not first.cursor.closed
    connection.close()
    with statement_cursor() as after:
        assert after is not first  # the old one belonged to the closed connection
        assert ANSWER.execute(after, [1, []]).fetchone() == (2, 0)


def test_statements_on_the_kept_cursor_run_in_the_callers_transaction() -> None:
    def create_then_fail() -> None:
        with transaction.atomic():
            with statement_cursor() as cursor:
                cursor.execute("CREATE TEMPORARY TABLE kept_cursor_probe (n int)")
            raise RuntimeError("roll it back")

    with pytest.raises(RuntimeError):
        create_then_fail()
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('pg_temp.kept_cursor_probe')")
        assert cursor.fetchone() == (None,)  # rolled back with the transaction


def test_with_an_execute_wrapper_installed_statements_go_through_djangos_cursor() -> None:
    seen: list[str] = []

    def spy(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with statement_cursor() as kept:
        ANSWER.execute(kept, [41, IDS])
    seen.clear()
    with connection.execute_wrapper(spy):
        with statement_cursor() as cursor:
            assert cursor is not kept
            assert ANSWER.execute(cursor, [41, IDS]).fetchone() == (42, 2)
        with kept:  # a wrapper installed after the cursor was taken still sees the statement
            assert ANSWER.execute(kept, [41, IDS]).fetchone() == (42, 2)
    assert len(seen) == 2
    assert all(ANSWER.prepared_name in sql for sql in seen)
