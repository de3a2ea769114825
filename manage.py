#!/usr/bin/env python3
"""One entry point for the four services: ``./manage.py <service> <command> [args]``.

./manage.py order migrate
./manage.py inventory shell
./manage.py payment relay          # the outbox relay of the payment service
"""

import os
import sys

from common.services import SERVICES

# Commands that span the four services rather than run inside one.
PLATFORM_COMMANDS = {"saga": "tools.choreography", "audit": "tools.audit"}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in PLATFORM_COMMANDS:
        import importlib

        module = importlib.import_module(PLATFORM_COMMANDS[sys.argv[1]])
        sys.exit(module.main(sys.argv[2:]))
    if len(sys.argv) < 2 or sys.argv[1] not in SERVICES:
        given = sys.argv[1] if len(sys.argv) > 1 else "(nothing)"
        sys.stderr.write(
            f"usage: ./manage.py <service> <django-command> [args]\n"
            f"  <service> is one of: {', '.join(SERVICES)} (got {given})\n"
            f"  e.g. ./manage.py order migrate, ./manage.py inventory shell\n"
            f"   or: ./manage.py saga graph  (the choreography of all four services)\n"
            f"   or: ./manage.py audit       (check SPEC §5 across all four databases)\n"
        )
        sys.exit(2)
    service = sys.argv[1]
    os.environ["DJANGO_SETTINGS_MODULE"] = f"{service}_svc.settings"
    from django.core.management import execute_from_command_line

    execute_from_command_line([f"{sys.argv[0]} {service}", *sys.argv[2:]])


if __name__ == "__main__":
    main()
