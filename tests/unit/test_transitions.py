"""The one state guard every domain model uses (common/errors.py)."""

from __future__ import annotations

import pytest

from common.errors import IllegalTransition, require_transition

MACHINE = {"A": frozenset({"B", "C"}), "B": frozenset({"C"})}


@pytest.mark.parametrize(("current", "to"), [("A", "B"), ("A", "C"), ("B", "C")])
def test_a_listed_transition_passes(current, to):
    require_transition(MACHINE, what="thing 1", current=current, to=to)


@pytest.mark.parametrize(("current", "to"), [("B", "A"), ("C", "A"), ("C", "C"), ("A", "A"), ("X", "B")])
def test_anything_else_is_refused_naming_both_states(current, to):
    with pytest.raises(IllegalTransition, match=f"thing 1: cannot go from {current} to {to}"):
        require_transition(MACHINE, what="thing 1", current=current, to=to)
