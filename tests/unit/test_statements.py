"""common/messaging/statements.py: the SQL a named statement is prepared and executed with (pure)."""

from __future__ import annotations

import pytest

from common.messaging.statements import Statement


def test_placeholders_become_numbered_parameters_of_the_declared_types() -> None:
    statement = Statement("s", "SELECT 1 FROM t WHERE a = %s AND b = ANY(%s)", ("uuid", "text[]"))
    assert statement.prepare_sql() == (
        "PREPARE saga_s (uuid, text[]) AS SELECT 1 FROM t WHERE a = $1 AND b = ANY($2)"
    )


def test_sent_unprepared_each_argument_is_cast_to_its_type() -> None:
    """psycopg2 sends a list as ARRAY['…'], a text[] PostgreSQL will not take for a uuid[]."""
    statement = Statement("s", "SELECT 1 FROM t WHERE a = %s AND b = ANY(%s)", ("uuid", "uuid[]"))
    assert statement.plain_sql() == "SELECT 1 FROM t WHERE a = %s::uuid AND b = ANY(%s::uuid[])"


def test_a_literal_percent_is_not_a_placeholder() -> None:
    statement = Statement("s", "SELECT 'a%%s' || %s", ("text",))
    assert statement.prepare_sql() == "PREPARE saga_s (text) AS SELECT 'a%s' || $1"  # sent as it is
    assert statement.plain_sql() == "SELECT 'a%%s' || %s::text"  # the driver unescapes it


def test_each_placeholder_needs_a_type() -> None:
    with pytest.raises(ValueError, match="2 placeholders but 1 types"):
        Statement("s", "SELECT %s, %s", ("int",))
