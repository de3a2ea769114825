"""Shared by every suite."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def _pusher_stopped_after_each_test():
    """Events a test published on commit are out (and the pusher's connection closed) before
    the next test starts, or the test database is dropped (common/messaging/direct.py)."""
    yield
    direct = sys.modules.get("common.messaging.direct")
    if direct is not None:
        direct.pusher().stop(timeout=10)
