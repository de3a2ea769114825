"""The admin's one rule for records that are evidence: shown, never added, edited or deleted.

Every record the admins show — orders and their timelines, reservations, payments,
shipments, outbox, inbox and parked messages — is written by the saga's own steps; an
edit by hand would break the invariants the audit checks. What an operator may do is an
action (replay or discard a parked message) or a command, and those are recorded.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False
