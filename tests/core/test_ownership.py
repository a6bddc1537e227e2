"""Ownership transfer's decisions: when a pass acts, what goes, to whom, when it may be dropped."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from a3redis.core.ownership import (
    BATCH,
    Settling,
    batches,
    durably_held,
    foreign_partitions,
    may_send,
)
from a3redis.core.record import ApplyOutcome
from a3redis.core.ring import Ring


def test_a_pass_acts_only_once_the_ring_stayed_the_same_and_not_while_joining() -> None:
    settling = Settling()
    assert not settling.settled(("a", "b"), joining=False)  # the first pass only sees the ring
    assert settling.settled(("a", "b"), joining=False)
    assert not settling.settled(("a", "b", "c"), joining=False)  # it changed
    assert not settling.settled(("a", "b", "c"), joining=True)
    assert settling.settled(("a", "b", "c"), joining=False)


@given(occupied=st.sets(st.integers(0, 63)), me=st.sampled_from(["a", "b", "c", "d"]))
def test_exactly_the_occupied_partitions_this_node_does_not_own_go(
    occupied: set[int], me: str
) -> None:
    ring = Ring(["a", "b", "c", "d"], 2, 64)
    foreign = foreign_partitions(occupied, me, ring.partition_owners)
    assert foreign == sorted(p for p in occupied if me not in ring.partition_owners(p))
    assert all(p in occupied for p in foreign)


def test_nothing_goes_unless_every_owner_is_alive() -> None:
    alive = {"a": True, "b": False}.__getitem__
    assert may_send(("a",), alive)
    assert not may_send(("a", "b"), alive)
    assert not may_send((), alive)  # no owner at all: nowhere for it to go


def test_a_batch_is_dropped_only_if_no_record_of_it_was_refused() -> None:
    held = [ApplyOutcome.STORED, ApplyOutcome.DUPLICATE, ApplyOutcome.SUPERSEDED]
    assert durably_held(held)
    assert not durably_held([*held, ApplyOutcome.REJECTED])


@given(count=st.integers(0, 3 * BATCH + 5))
def test_keys_leave_in_order_in_batches_of_at_most_batch(count: int) -> None:
    keys = [b"%05d" % n for n in range(count)]
    parts = list(batches(keys))
    assert [k for part in parts for k in part] == keys
    assert all(0 < len(part) <= BATCH for part in parts)
