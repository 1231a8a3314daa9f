"""Vector clocks: the partial order, the join, and checks on clocks from peers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from csembed.database import InvalidUpdate, Order, VectorClock

PEERS = [f"{i:032x}" for i in range(1, 6)]
A, B, C = PEERS[:3]

clocks = st.dictionaries(st.sampled_from(PEERS), st.integers(0, 6), max_size=5).map(VectorClock)


def test_draft_style_examples():
    assert VectorClock({A: 1}).compare(VectorClock({A: 2})) is Order.BEFORE
    assert VectorClock({A: 2, B: 1}).compare(VectorClock({A: 2})) is Order.AFTER
    assert VectorClock({A: 2}).compare(VectorClock({B: 1})) is Order.CONCURRENT
    assert VectorClock({A: 1, B: 0}).compare(VectorClock({A: 1})) is Order.EQUAL
    assert VectorClock().compare(VectorClock({C: 3})) is Order.BEFORE


def test_zero_entries_are_dropped_and_text_is_canonical():
    clock = VectorClock({B: 2, A: 0, C: 1})
    assert clock.to_json() == {B: 2, C: 1}
    assert clock.to_text() == f'{{"{B}":2,"{C}":1}}'
    assert VectorClock.from_text(clock.to_text()) == clock
    assert hash(clock) == hash(VectorClock({C: 1, B: 2}))


@given(clocks, clocks)
def test_compare_agrees_with_le_and_is_antisymmetric(x, y):
    order = x.compare(y)
    assert order is {
        Order.EQUAL: Order.EQUAL, Order.BEFORE: Order.AFTER,
        Order.AFTER: Order.BEFORE, Order.CONCURRENT: Order.CONCURRENT,
    }[y.compare(x)]
    assert (x <= y) == (order in (Order.EQUAL, Order.BEFORE))
    assert (x < y) == (order is Order.BEFORE)
    assert (x == y) == (order is Order.EQUAL)


@given(clocks, clocks, clocks)
def test_merge_is_the_least_upper_bound(x, y, z):
    joined = x.merge(y)
    assert x <= joined and y <= joined
    assert joined == y.merge(x)
    assert x.merge(y, z) == x.merge(y).merge(z) == x.merge(y.merge(z))
    assert x.merge(x) == x
    if x <= z and y <= z:
        assert joined <= z
    for peer in PEERS:
        assert joined.get(peer) == max(x.get(peer), y.get(peer))


@given(clocks, st.sampled_from(PEERS), st.integers(1, 100))
def test_a_write_descends_from_what_it_joined(x, peer, bump):
    written = x.with_entry(peer, x.get(peer) + bump)
    assert x < written
    assert written.compare(x) is Order.AFTER


@pytest.mark.parametrize(
    "value",
    [[], "x", None, {"ABCDEF" * 5 + "AB": 1}, {A: -1}, {A: 2**63}, {A: True}, {A: 1.0},
     {A[:-1]: 1}, {f"{i:032x}": 1 for i in range(9)}],
)
def test_from_json_rejects_bad_clocks(value):
    with pytest.raises(InvalidUpdate, match="vector_clock"):
        VectorClock.from_json(value, max_entries=8)


def test_from_json_accepts_bounds():
    clock = VectorClock.from_json({A: 2**63 - 1, B: 0}, max_entries=2)
    assert clock.get(A) == 2**63 - 1 and len(clock) == 1


def test_constructor_rejects_bad_entries():
    with pytest.raises(ValueError):
        VectorClock({"nope": 1})
    with pytest.raises(TypeError):
        VectorClock({A: "1"})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        VectorClock({A: -2})
