"""The web's database health check is skipped for a connection that just answered a request
(``SAGA_DB_FRESH_SECONDS``, common/web/api.py), and kept for any other: on a real PostgreSQL,
with Django's own request signals, as a web request sends them."""

from __future__ import annotations

import select

import psycopg2
import pytest
from django.core.signals import request_finished, request_started
from django.db import connection

import common.web.api  # noqa: F401 - connects the receivers, as the web process does
from common.settings import database_params

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def checks(monkeypatch) -> list[int]:
    """Every health check the connection makes (Django's ``is_usable``, which sends SELECT 1)."""
    made: list[int] = []
    real = connection.is_usable

    def counted() -> bool:
        made.append(1)
        return real()

    monkeypatch.setattr(connection, "is_usable", counted)
    connection.saga_fresh_until = 0.0  # what an earlier test left on this thread's connection
    return made


def request(fail: bool = False) -> bool:
    """What a request does with the database: Django's signals around its first query.
    Whether the query succeeded."""
    request_started.send(sender=None)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELEC 1" if fail else "SELECT 1")  # a syntax error marks it
        return True
    except Exception:  # noqa: BLE001 - the failed query is the point
        return False
    finally:
        request_finished.send(sender=None)


def test_a_connection_that_just_answered_is_not_checked_again(settings, checks) -> None:
    settings.SAGA_DB_FRESH_SECONDS = 60
    connection.ensure_connection()
    request()
    assert len(checks) == 1  # not yet known fresh: checked
    request()
    request()
    assert len(checks) == 1


def test_a_connection_idle_longer_is_checked(settings, checks) -> None:
    settings.SAGA_DB_FRESH_SECONDS = 60
    connection.ensure_connection()
    request()
    connection.saga_fresh_until = 0.0  # as if the last request ended long ago
    request()
    assert len(checks) == 2


def test_off_checks_before_every_request(settings, checks) -> None:
    settings.SAGA_DB_FRESH_SECONDS = 0
    connection.ensure_connection()
    connection.saga_fresh_until = 0.0
    request()
    request()
    assert len(checks) == 2


def test_a_connection_that_failed_is_checked_at_the_next_request(settings, checks) -> None:
    settings.SAGA_DB_FRESH_SECONDS = 60
    connection.ensure_connection()
    request()
    request()
    assert len(checks) == 1
    request(fail=True)  # Django's error wrapper marks the connection; at the request's end
    assert len(checks) == 2  # Django checks it, and keeps it as it answers
    request()
    assert len(checks) == 2
    assert connection.connection is not None


def test_a_connection_the_server_ended_is_checked_and_replaced(settings, checks) -> None:
    """Fresh or not: a terminated session (an operator, a failover, a restart) is noticed
    before the request's first query, which then runs on a new connection."""
    settings.SAGA_DB_FRESH_SECONDS = 60
    connection.ensure_connection()
    assert request()
    backend = connection.connection.get_backend_pid()
    with psycopg2.connect(**database_params("order")) as other, other.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
    readable, _, _ = select.select([connection.connection.fileno()], [], [], 10)  # its goodbye
    assert readable
    assert request()
    assert len(checks) == 2
    assert connection.connection.get_backend_pid() != backend
