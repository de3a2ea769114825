"""Errors a service raises that the API layer maps to HTTP statuses."""


class AlreadyExists(Exception):
    """A create found its natural key taken (→ 409)."""
