"""Indexes the housekeeping purge (common/messaging/purge.py) needs to find old rows without a scan.

Without them every purge batch would scan the whole inbox (or outbox) for rows older than
the cutoff, and the last batch of each run (the one that finds fewer rows than a batch)
always would. Costs: one more btree entry per handled event (inbox) and per publish
(outbox, whose publish UPDATE already touches every index: it changes the predicate
column of ``outbox_unpublished_idx``).

Built ``CONCURRENTLY`` so that migrating a live, large table never blocks the handlers'
inserts or the relay's updates; that cannot run in a transaction, hence ``atomic =
False``. An index left INVALID by an interrupted build is dropped and rebuilt (``IF NOT
EXISTS`` alone would keep it). The indexes live outside Django's model state (the
models do not declare them), so ``makemigrations`` sees nothing to change.
"""

from django.db import migrations

INDEXES = {
    "messaging_inbox_received_at_idx": "messaging_inbox (received_at)",
    "messaging_outbox_published_at_idx": "messaging_outbox (published_at) WHERE published_at IS NOT NULL",
}


def create(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        # The services' 10 s statement timeout and 2 s lock timeout would abort a build on
        # a big table; a concurrent build only waits for running transactions to end.
        cursor.execute("SET statement_timeout = 0; SET lock_timeout = '60s'")
        try:
            for name, target in INDEXES.items():
                cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [name])
                row = cursor.fetchone()
                if row is not None and not row[0]:
                    cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
                cursor.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {target}")
        finally:
            cursor.execute("RESET statement_timeout; RESET lock_timeout")


def drop(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for name in INDEXES:
            cursor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("messaging", "0002_parked_and_cancelled"),
    ]

    operations = [
        migrations.RunPython(create, drop, elidable=False),
    ]
