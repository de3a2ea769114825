"""``./manage.py <service> purge [--dry-run]``: the relay's housekeeping, by hand.

For operators: to see what the retention rule (common/messaging/purge.py) would delete, or to catch
up after the relay's periodic purge was off. Batches commit one by one, as in the relay,
so running it on a live service locks nothing for long.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from common.messaging.purge import INBOX, OUTBOX, Kept, Retention, oldest_kept, purge, purgeable_counts


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "none"


def _span(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class Command(BaseCommand):
    help = (
        "Delete inbox rows older than the sum of the retry delays plus the replay margin, and "
        "published outbox rows older than their retention; print counts and the oldest rows kept."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be deleted; delete nothing"
        )
        parser.add_argument(
            "--batch", type=int, default=None, help="rows per DELETE (default SAGA_PURGE_BATCH)"
        )
        parser.add_argument(
            "--time-budget",
            type=float,
            default=math.inf,
            help="stop starting new batches after this many seconds (default: no limit)",
        )

    def handle(self, *args, dry_run: bool, batch: int | None, time_budget: float, **options) -> None:
        try:
            retention = Retention.from_settings()
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if batch is not None and batch < 1:
            raise CommandError("--batch must be at least 1")
        service = settings.SERVICE_NAME
        self.stdout.write(
            f"{service}: inbox window {_span(retention.inbox_seconds)} (retry tiers "
            f"{_span(retention.retry_seconds)} + replay margin {_span(retention.replay_margin_seconds)}); "
            f"published outbox rows kept {_span(retention.outbox_seconds)}; unpublished rows never purged"
        )
        if dry_run:
            counts = purgeable_counts(retention)
            limits = {table: cutoff for table, (cutoff, _) in counts.items()}
            self.stdout.write(
                f"would delete {counts[INBOX][1]} inbox row(s) received before {_when(limits[INBOX])}"
            )
            self.stdout.write(
                f"would delete {counts[OUTBOX][1]} outbox row(s) published before {_when(limits[OUTBOX])}"
            )
            self._kept(oldest_kept(limits))
            return
        result = purge(retention=retention, batch=batch, time_budget=time_budget)
        for part, what in ((result.inbox, "received"), (result.outbox, "published")):
            self.stdout.write(
                f"deleted {part.deleted} {part.table.removeprefix('messaging_')} row(s) {what} before "
                f"{_when(part.cutoff)} in {part.statements} statement(s)"
                + ("" if part.finished else " (time budget spent: some are left)")
            )
        self.stdout.write(f"took {result.seconds:.2f}s")
        self._kept(oldest_kept({INBOX: result.inbox.cutoff, OUTBOX: result.outbox.cutoff}))

    def _kept(self, kept: Kept) -> None:
        self.stdout.write(f"oldest inbox row kept: received {_when(kept.inbox_received_at)}")
        self.stdout.write(f"oldest published outbox row kept: published {_when(kept.outbox_published_at)}")
        self.stdout.write(
            f"unpublished outbox rows: {kept.outbox_unpublished}"
            + (
                f", oldest created {_when(kept.outbox_oldest_unpublished_at)}"
                if kept.outbox_unpublished
                else ""
            )
        )
