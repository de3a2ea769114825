"""What the Hypothesis state machines of the per-service tests share.

Sagas whose events queue up and are delivered as the worker's group commit does: in
batches of random length (``deliver_drawn_batch``), with redeliveries joining the queue
and duplicates of earlier deliveries that must change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from common.messaging.consumer import Disposition
from common.messaging.envelope import Envelope
from common.messaging.models import CancelledSaga, InboxMessage, OutboxMessage
from tests.events import deliver_batch, envelope


def deliver_drawn_batch(
    data: Any, pending: list[tuple[Any, Envelope]], sagas: list[Any]
) -> tuple[list, list]:
    """For the Hypothesis state machines: the worker takes what arrived — the next ``size``
    deliveries, maybe one of them twice — and handles them as one batch. Every first copy
    must be HANDLED and every other one a DUPLICATE; first copies join ``saga.delivered``.
    Returns (taken, still pending)."""
    size = data.draw(st.integers(1, len(pending)), label="batch size")
    taken, rest = pending[:size], pending[size:]
    if data.draw(st.booleans(), label="a duplicate inside the batch"):
        copied = data.draw(st.integers(0, size - 1))
        taken.insert(data.draw(st.integers(copied + 1, size)), taken[copied])
    seen = {e.event_id for saga in sagas for e in saga.delivered}
    outcomes = deliver_batch([event for _, event in taken])
    for (saga, event), outcome in zip(taken, outcomes, strict=True):
        first = event.event_id not in seen
        seen.add(event.event_id)
        expected = Disposition.HANDLED if first else Disposition.DUPLICATE
        assert outcome.disposition is expected, (event.event_type, outcome)
        if first:
            saga.delivered.append(event)
    return taken, rest


@dataclass
class DeliveredSaga:
    order_id: str
    delivered: list[Envelope] = field(default_factory=list, kw_only=True)
    cancelled: bool = field(default=False, kw_only=True)  # OrderCancelled queued

    def has(self, event_type: str) -> bool:
        """Delivered (not only queued)."""
        return any(event.event_type == event_type for event in self.delivered)


class DeliveryMachine(RuleBasedStateMachine):
    """A subclass seeds its service in an ``@initialize`` rule that starts with
    ``self.wipe(...)``, queues events with ``self._deliver``, notes what a batch did in
    ``settle`` and names in ``holdings`` what a duplicate delivery must leave unchanged."""

    @classmethod
    def run(cls, *, examples: int = 40, steps: int = 30) -> None:
        """Run the machine: ``examples`` random programs of up to ``steps`` steps each."""
        cls.TestCase.settings = settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        cls.TestCase().runTest()

    def wipe(self, *models: Any) -> None:
        """Empty the service's tables and the messaging ones; no saga, nothing queued."""
        for model in (*models, InboxMessage, OutboxMessage, CancelledSaga):
            model.objects.all().delete()
        self.sagas: list[Any] = []
        self.pending: list[tuple[Any, Envelope]] = []

    def _deliver(self, saga: Any, event: Envelope) -> None:
        self.pending.append((saga, event))

    def cancel(self, saga: DeliveredSaga) -> None:
        """The order service gives up on ``saga`` (its deadline): OrderCancelled is queued."""
        self._deliver(
            saga, envelope("OrderCancelled", saga.order_id, {"reason": "deadline"}, producer="order")
        )
        saga.cancelled = True

    def settle(self, taken: list[tuple[Any, Envelope]]) -> None:
        """After a batch: record on the sagas what it did."""

    def holdings(self) -> list[Any]:
        raise NotImplementedError

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def batch(self, data: st.DataObject) -> None:
        """The worker takes what arrived: the next ``size`` deliveries, maybe one of them twice."""
        taken, self.pending = deliver_drawn_batch(data, self.pending, self.sagas)
        self.settle(taken)

    @precondition(lambda self: any(s.delivered for s in self.sagas))
    @rule(data=st.data())
    def redelivered(self, data: st.DataObject) -> None:
        """A copy of a delivered event joins the queue (a redelivery after a crash)."""
        saga = data.draw(st.sampled_from([s for s in self.sagas if s.delivered]))
        self.pending.append((saga, data.draw(st.sampled_from(saga.delivered))))

    @precondition(lambda self: any(s.delivered for s in self.sagas) and not self.pending)
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        """At-least-once delivery: any earlier event comes again, and changes nothing."""
        saga = data.draw(st.sampled_from([s for s in self.sagas if s.delivered]))
        event = data.draw(st.sampled_from(saga.delivered))
        before = self.holdings()
        [outcome] = deliver_batch([event])
        assert outcome.disposition is Disposition.DUPLICATE
        assert self.holdings() == before
