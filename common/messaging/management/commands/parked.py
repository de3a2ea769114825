import getpass
import json

from django.core.management.base import BaseCommand, CommandError

from common.messaging.models import ParkedMessage, ParkedStatus
from common.messaging.parking import ParkedStateError, parked_discard, parked_replay


class Command(BaseCommand):
    help = "List, inspect, replay or discard this service's parked messages."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        listing = sub.add_parser("list", help="parked messages, newest first")
        listing.add_argument("--all", action="store_true", help="include replayed and discarded ones")
        listing.add_argument("--saga", help="only this saga (order id)")
        listing.add_argument("--json", action="store_true", help="machine-readable output")
        show = sub.add_parser("show", help="one message: reason, error, headers, body, history")
        show.add_argument("id", type=int)
        replay = sub.add_parser("replay", help="send back to this service's queue, attempts reset")
        replay.add_argument("ids", type=int, nargs="*")
        replay.add_argument("--all", action="store_true", help="every message still parked")
        discard = sub.add_parser("discard", help="give up on messages for good (recorded)")
        discard.add_argument("ids", type=int, nargs="+")
        discard.add_argument("--note", default="", help="why (kept with the record)")
        for each in (replay, discard):
            each.add_argument("--operator", default=getpass.getuser(), help="who does it (recorded)")

    def handle(self, *args, action: str, **options) -> None:
        getattr(self, f"do_{action}")(**options)

    def do_list(self, *, all: bool, saga: str | None, json: bool, **_) -> None:  # noqa: A002
        messages = ParkedMessage.objects.all()
        if not all:
            messages = messages.filter(status=ParkedStatus.PARKED)
        if saga:
            messages = messages.filter(saga_id=saga)
        rows = [
            {
                "id": m.id,
                "status": m.status,
                "parked_at": m.parked_at.isoformat(),
                "event_type": m.event_type,
                "event_id": str(m.event_id or ""),
                "saga_id": str(m.saga_id or ""),
                "attempts": m.attempts,
                "reason": m.reason,
                "body": m.body_text[:2000],
                "headers": m.headers,
            }
            for m in messages[:1000]
        ]
        if json:
            self.stdout.write(_dumps(rows))
            return
        if not rows:
            self.stdout.write("no parked messages")
            return
        for row in rows:
            self.stdout.write(
                f"#{row['id']:<5} {row['status']:<9} {row['parked_at'][:19]}  "
                f"{row['event_type'] or '(unreadable)':<18} saga {row['saga_id'] or '-':<36}  "
                f"attempts {row['attempts']}  {row['reason'][:100]}"
            )

    def do_show(self, *, id: int, **_) -> None:  # noqa: A002
        message = _get(id)
        self.stdout.write(f"parked message #{message.id} — {message.status}")
        self.stdout.write(f"  parked at   {message.parked_at.isoformat()}")
        self.stdout.write(f"  event       {message.event_type or '(unreadable)'} {message.event_id or ''}")
        self.stdout.write(f"  saga        {message.saga_id or '-'}")
        self.stdout.write(f"  attempts    {message.attempts}")
        self.stdout.write(f"  reason      {message.reason}")
        self.stdout.write(f"  last error  {message.last_error or '-'}")
        self.stdout.write(f"  headers     {_dumps(message.headers)}")
        self.stdout.write(f"  body        {message.body_text}")
        for act in message.actions.order_by("at"):
            self.stdout.write(f"  {act.at.isoformat()}  {act.action} by {act.operator} {act.note}")

    def do_replay(self, *, ids: list[int], all: bool, operator: str, **_) -> None:  # noqa: A002
        if all:
            ids = list(ParkedMessage.objects.filter(status=ParkedStatus.PARKED).values_list("id", flat=True))
        if not ids:
            raise CommandError("name the messages to replay (ids), or --all")
        for message_id in ids:
            try:
                message = parked_replay(message_id=_get(message_id).id, operator=operator)
            except ParkedStateError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"#{message.id} replayed to this service's queue by {operator}")

    def do_discard(self, *, ids: list[int], note: str, operator: str, **_) -> None:
        for message_id in ids:
            try:
                message = parked_discard(message_id=_get(message_id).id, operator=operator, note=note)
            except ParkedStateError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"#{message.id} discarded by {operator}")


def _get(message_id: int) -> ParkedMessage:
    message = ParkedMessage.objects.filter(id=message_id).first()
    if message is None:
        raise CommandError(f"no parked message #{message_id} in this service")
    return message


def _dumps(value: object) -> str:
    return json.dumps(value, indent=2, default=str, sort_keys=True)
