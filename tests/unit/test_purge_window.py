"""The purge's pure logic (common/messaging/purge.py), without a database.

The inbox window is what keeps a late copy of an event harmless, so its arithmetic is
pinned here; :class:`PeriodicPurge` is the relay's scheduler, driven by a fake clock:
at most one run per interval, sooner again when a run was cut by its time budget, and
a failing run swallowed (the relay must keep publishing).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.messaging.purge import INBOX, OUTBOX, PeriodicPurge, PurgeResult, TablePurge, inbox_window_seconds


def test_the_inbox_window_is_the_sum_of_the_retry_tiers_plus_the_replay_margin() -> None:
    # Sum, not max: one message goes through the 1 s, 5 s and 30 s tiers in turn.
    assert inbox_window_seconds([1000, 5000, 30000], 7 * 24 * 3600) == 36 + 7 * 24 * 3600
    assert inbox_window_seconds([], 0) == 0


@pytest.mark.parametrize(("delays", "margin"), [([1000], -1), ([-1000], 10)])
def test_a_negative_window_part_is_refused(delays: list[int], margin: float) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        inbox_window_seconds(delays, margin)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def result(*, finished: bool = True) -> PurgeResult:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return PurgeResult(TablePurge(INBOX, at, 0, 1, finished), TablePurge(OUTBOX, at, 0, 1, True), 0.0)


def test_purge_if_due_runs_at_most_once_per_interval() -> None:
    clock, runs = FakeClock(), []
    periodic = PeriodicPurge(interval=600, run=lambda: runs.append(clock.now) or result(), clock=clock)
    for _ in range(14):  # a relay loop pass every 100 s
        periodic.purge_if_due()
        clock.now += 100
    assert runs == [1000.0, 1600.0, 2200.0]


def test_the_first_run_waits_for_its_delay() -> None:
    clock, runs = FakeClock(), []
    periodic = PeriodicPurge(
        interval=600, run=lambda: runs.append(clock.now) or result(), clock=clock, first_delay=30
    )
    assert periodic.purge_if_due() is None
    clock.now += 30
    assert periodic.purge_if_due() is not None
    assert runs == [1030.0]


def test_a_run_cut_by_its_time_budget_continues_after_a_short_pause() -> None:
    clock, outcomes = FakeClock(), iter([False, True])
    periodic = PeriodicPurge(
        interval=600, run=lambda: result(finished=next(outcomes)), clock=clock, backlog_pause=10
    )
    assert periodic.purge_if_due() is not None  # unfinished: rows left
    clock.now += 9
    assert periodic.purge_if_due() is None
    clock.now += 1
    assert periodic.purge_if_due() is not None  # finished: back to the interval
    clock.now += 599
    assert periodic.purge_if_due() is None


def test_a_failing_purge_is_logged_not_raised_and_tried_again_an_interval_later(caplog) -> None:
    clock, calls = FakeClock(), []

    def failing() -> PurgeResult:
        calls.append(clock.now)
        raise RuntimeError("database away")

    periodic = PeriodicPurge(interval=600, run=failing, clock=clock)
    assert periodic.purge_if_due() is None
    assert "purge failed" in caplog.text
    clock.now += 300
    assert periodic.purge_if_due() is None
    clock.now += 300
    periodic.purge_if_due()
    assert calls == [1000.0, 1600.0]


@pytest.mark.parametrize("interval", [0, -1])
def test_an_interval_of_zero_or_less_turns_the_periodic_purge_off(interval: float) -> None:
    periodic = PeriodicPurge(interval=interval, run=lambda: pytest.fail("ran"), clock=FakeClock())
    assert not periodic.enabled
    assert periodic.purge_if_due() is None
