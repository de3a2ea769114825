"""Operator tools that span all four services (``./manage.py audit``, ``./manage.py saga``).

Unlike ``common``, these may know every service: the audit reads the four databases
(read-only) to check SPEC §5, and the saga graph imports the four handler registries.
Nothing in the services imports them.
"""
