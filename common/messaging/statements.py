"""Named SQL statements, prepared once per database connection (``PREPARE`` / ``EXECUTE``).

The saga's hot paths run short statements thousands of times a minute, and PostgreSQL
planned every one of them afresh: under ``make bench`` pg_stat_statements counted as
much time planning them as executing them. A :class:`Statement` is prepared on a
connection the first time it runs there and executed by name from then on, with a
generic plan (``plan_cache_mode=force_generic_plan`` in the connection options), so it
is parsed and planned once per connection instead of once per call.

Each parameter has a declared type and every argument is cast to it in the ``EXECUTE``
(psycopg2 sends a list as ``ARRAY['…']``, a ``text[]`` that PostgreSQL will not coerce
to ``uuid[]`` on its own). A statement that varies in shape (several rows) takes arrays
and ``unnest``s them, so one prepared statement serves any number of rows.

Prepared statements live as long as the session, whatever the transaction does. They
need session-level connections: behind PgBouncer in transaction mode turn them off
(``SAGA_DB_PREPARE=0``: the same SQL is then sent as it is). Should a prepared statement
go missing or stale (``DISCARD ALL``; a migration that changes what it returns), the
error propagates — the consumer retries the delivery — and the statement is prepared
again under a new name the next time.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

_PLACEHOLDER = re.compile(r"(?<!%)%s")
# psycopg2's pgcode of the errors that mean "prepare it again": no such prepared statement
# (26000), cached plan must not change result type (0A000).
_STALE = {"26000", "0A000"}
_generation = itertools.count(1)
_SQL_LOG = logging.getLogger("django.db.backends")  # where Django logs each query at DEBUG


def _listened(db: Any) -> bool:
    """Does something listen to this connection's queries: an ``execute_wrapper``
    installed, or Django's SQL log at DEBUG? Then statements go through Django's cursor."""
    return bool(db.execute_wrappers) or _SQL_LOG.isEnabledFor(logging.DEBUG)


@dataclass
class Statement:
    """One SQL statement with ``%s`` placeholders and the PostgreSQL type of each."""

    name: str
    sql: str
    types: tuple[str, ...]
    _suffix: int = field(default=0, repr=False)
    _execute: tuple[str, str] | None = field(default=None, repr=False)
    _plain: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        count = len(_PLACEHOLDER.findall(self.sql))
        if count != len(self.types):
            raise ValueError(f"statement {self.name}: {count} placeholders but {len(self.types)} types")

    @property
    def prepared_name(self) -> str:
        return f"saga_{self.name}_{self._suffix}" if self._suffix else f"saga_{self.name}"

    def prepare_sql(self) -> str:
        numbers = itertools.count(1)
        # Sent without parameters, so the driver unescapes nothing: "%%" is ours to undo.
        body = _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", self.sql).replace("%%", "%")
        types = f" ({', '.join(self.types)})" if self.types else ""
        return f"PREPARE {self.prepared_name}{types} AS {body}"

    def plain_sql(self) -> str:
        """The statement itself, each placeholder cast to its type (``%s::uuid[]``)."""
        if self._plain is None:
            types = iter(self.types)
            self._plain = _PLACEHOLDER.sub(lambda _: f"%s::{next(types)}", self.sql)
        return self._plain

    def execute_sql(self) -> str:
        """The SQL to send: ``EXECUTE name(%s::type, …)`` once prepared (else ``plain_sql``)."""
        if not settings.SAGA_DB_PREPARE:
            return self.plain_sql()
        wrapper = connections[DEFAULT_DB_ALIAS]  # this thread's connection
        if wrapper.connection is None:
            wrapper.connect()
        known = getattr(wrapper, "_saga_prepared", None)
        if known is None or known[0] is not wrapper.connection:
            known = wrapper._saga_prepared = (wrapper.connection, set())
        name = self.prepared_name
        if name not in known[1]:
            with wrapper.cursor() as cursor:
                cursor.execute(self.prepare_sql())
            known[1].add(name)
        if self._execute is None or self._execute[0] != name:
            args = ", ".join(f"%s::{t}" for t in self.types)
            self._execute = (name, f"EXECUTE {name}({args})" if self.types else f"EXECUTE {name}")
        return self._execute[1]

    def execute(self, cursor: Any, params: Sequence[Any] = ()) -> Any:
        """Run the statement on ``cursor`` (``statement_cursor()`` below, or any cursor of
        ``django.db.connection``).

        Straight on the driver's cursor, inside Django's error translation and its check
        for a transaction already broken — the two things Django's cursor wrapper does
        that matter here. Not through its execute wrappers or its query log: per
        statement those cost as much client CPU as the driver's own execute (py-spy under
        ``make bench``; docs/performance.md). When something listens — an
        ``execute_wrapper`` installed, or the ``django.db.backends`` logger at DEBUG — the
        statement goes through Django's wrapper as any query does. (With ``DEBUG`` on,
        ``connection.queries`` does not list these statements.)
        """
        sql = self.execute_sql()
        db = cursor.db
        try:
            if _listened(db):
                cursor.execute(sql, list(params))
            else:
                db.validate_no_broken_transaction()
                with db.wrap_database_errors:
                    cursor.cursor.execute(sql, list(params))
        except DatabaseError as exc:
            if getattr(exc.__cause__, "pgcode", None) in _STALE:
                self._suffix = next(_generation)  # prepared afresh, under a new name, next time
            raise
        return cursor


class DriverCursor:
    """The driver's cursor of one database connection, kept for as long as the connection.

    What ``Statement.execute`` and its callers use of Django's cursor wrapper — ``db``,
    ``cursor``, ``execute``, ``fetchone``, ``fetchall``, ``rowcount`` — without a wrapper
    and a driver cursor built and closed around every statement. A client-side cursor
    holds nothing between statements but the last one's rows, and every statement runs
    in the connection's transaction whatever cursor sends it.
    """

    __slots__ = ("cursor", "db", "raw_connection")

    def __init__(self, db: Any) -> None:
        self.db = db
        self.raw_connection = db.connection
        self.cursor = db.create_cursor()  # as Django's own: its time zone for timestamps

    def __enter__(self) -> DriverCursor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Kept open for the next statement (``statement_cursor()``)."""

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> DriverCursor:
        """Through Django's wrapper (its execute wrappers, its query log), on this cursor."""
        db = self.db
        wrapper = db.make_debug_cursor(self.cursor) if db.queries_logged else db.make_cursor(self.cursor)
        wrapper.execute(sql, params)
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.cursor.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return self.cursor.rowcount


def statement_cursor() -> Any:
    """A cursor of this thread's connection for named statements: ``with statement_cursor() as c``.

    The connection's kept ``DriverCursor``, after the checks Django's ``connection.cursor()``
    makes (a failed health check closes the connection; a closed one is opened). Building
    Django's wrapper and a driver cursor and closing both around every statement was
    ≈ 5 % of a worker's CPU under ``make bench``. When something listens to the queries —
    an ``execute_wrapper`` installed, or the ``django.db.backends`` logger at DEBUG — it is
    Django's own cursor, as for any query.
    """
    db = connections[DEFAULT_DB_ALIAS]
    if _listened(db):
        return db.cursor()
    db.close_if_health_check_failed()
    db.ensure_connection()
    kept: DriverCursor | None = db.__dict__.get("_saga_cursor")
    if kept is None or kept.raw_connection is not db.connection or kept.cursor.closed:
        kept = db._saga_cursor = DriverCursor(db)
    return kept
