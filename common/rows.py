"""Inserting model instances with one plain statement: the hot paths' ``create``.

``Model.objects.create`` and ``bulk_create`` spend most of their CPU compiling the
query (py-spy: a fifth of the order API's process on every POST). ``insert_rows`` keeps
what matters of them — each field's default, ``auto_now``, and its conversion for the
database (``pre_save``, ``get_db_prep_save``, Django's own) — and writes the SQL itself.
Like ``bulk_create``, it sends no signals and runs no validation.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection, models


def insert_rows(objs: Sequence[models.Model]) -> None:
    """INSERT ``objs`` (all of one model) in one statement; an auto primary key comes back."""
    if not objs:
        return
    meta = objs[0]._meta
    auto = meta.auto_field
    fields = [field for field in meta.concrete_fields if field is not auto]
    quote = connection.ops.quote_name
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field.column) for field in fields)})"
        f" VALUES {', '.join([row] * len(objs))}"
    )
    if auto is not None:
        sql += f" RETURNING {quote(auto.column)}"  # in the order of VALUES, as bulk_create relies on
    params = [
        field.get_db_prep_save(field.pre_save(obj, True), connection) for obj in objs for field in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if auto is not None:
            for obj, (pk,) in zip(objs, cursor.fetchall(), strict=True):
                setattr(obj, auto.attname, pk)
    for obj in objs:
        obj._state.adding = False
        obj._state.db = connection.alias
