"""Placement properties of the rendezvous-hash ring."""

from __future__ import annotations

import gc
import time

import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.cluster.topology import RING_INLINE_COST
from a3redis.core.ring import Ring, partition_of, partitions_of

node_names = st.lists(
    st.text("abcdefghij0123456789-", min_size=1, max_size=12), min_size=1, max_size=12, unique=True
)


@settings(max_examples=50, deadline=None)
@given(members=node_names, factor=st.integers(1, 5), data=st.data())
def test_preference_lists_are_distinct_and_the_same_on_every_node(
    members: list[str], factor: int, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(members))
    mine, theirs = Ring(members, factor, 256), Ring(shuffled, factor, 256)
    for partition in range(256):
        owners = mine.partition_owners(partition)
        assert len(owners) == min(factor, len(members))
        assert len(set(owners)) == len(owners)
        assert owners == theirs.partition_owners(partition)


@given(key=st.binary(max_size=64))
def test_a_key_always_lands_in_the_same_partition(key: bytes) -> None:
    assert partition_of(key) == partition_of(bytes(key))
    assert 0 <= partition_of(key, 64) < 64


@given(st.lists(st.binary(max_size=40), max_size=20), st.sampled_from([1, 2, 64, 4096]))
def test_partitions_of_many_keys_are_each_ones_partition(keys: list[bytes], ring: int) -> None:
    assert partitions_of(keys, ring) == [partition_of(key, ring) for key in keys]


@settings(max_examples=25, deadline=None)
@given(size=st.integers(3, 30), factor=st.integers(1, 3), newcomer=st.text("xyz", min_size=3))
def test_adding_a_node_moves_about_n_over_m_and_only_towards_it(
    size: int, factor: int, newcomer: str
) -> None:
    members = [f"node-{i}" for i in range(size)]
    before = Ring(members, factor, 1024)
    after = Ring([*members, newcomer], factor, 1024)
    changed = 0
    for partition in range(1024):
        old, new = before.partition_owners(partition), after.partition_owners(partition)
        if set(old) != set(new):
            changed += 1
            # Only the newcomer enters; everybody else who stays keeps their place.
            assert set(new) - set(old) == {newcomer}
            assert len(set(old) - set(new)) <= 1
    expected = min(factor, size + 1) / (size + 1)
    assert changed / 1024 <= expected + 0.06, (changed / 1024, expected)


@settings(max_examples=25, deadline=None)
@given(size=st.integers(4, 30), factor=st.integers(1, 3), gone=st.integers(0, 29))
def test_removing_a_node_moves_only_its_partitions(size: int, factor: int, gone: int) -> None:
    members = [f"node-{i}" for i in range(size)]
    removed = members[gone % size]
    before = Ring(members, factor, 1024)
    after = Ring([m for m in members if m != removed], factor, 1024)
    changed = 0
    for partition in range(1024):
        old, new = before.partition_owners(partition), after.partition_owners(partition)
        if old != new:
            changed += 1
            assert removed in old
            assert [n for n in old if n != removed] == list(new[: len(old) - 1])
    assert changed / 1024 <= factor / size + 0.06


def test_the_busiest_of_3_to_50_nodes_holds_at_most_125_percent_of_the_mean() -> None:
    worst = 0.0
    for size in range(3, 51):
        shares = Ring([f"node-{i}" for i in range(1, size + 1)], 3).shares()
        worst = max(worst, max(shares.values()) * size)
    # Measured with the default 4096 partitions: 1.17.
    assert worst <= 1.25, worst


def placement_digest(ring: Ring) -> str:
    lists = b";".join(",".join(ring.partition_owners(p)).encode() for p in range(ring.partitions))
    return blake3(lists + b";").hexdigest()[:32]


# Placements computed with the ring code of 0a15a45, before it scored on integer lanes:
# a faster ring must never move a key.
GOLDEN = [
    (["node-1", "node-2", "node-3"], 3, 4096, "0302ab2a2f55af50e8ef8a1c54cd6339"),
    ([f"node-{i}" for i in range(1, 8)], 2, 4096, "609cd88f7e4fcafef4aba9fb7d53e8ab"),
    ([f"n{i}" for i in range(40)], 3, 1024, "839dd9cfbca802edadc555102bf9a772"),
    (["a"], 3, 4096, "9569ab9492da2e29397be89705e8ebc0"),
    (["b", "a"], 5, 64, "f8292a488776308c631c787727c1e6b4"),
    ([f"m-{i}" for i in range(300)], 3, 256, "9d6c67c925a3b89f9ba05c6e4ea96104"),
]


@pytest.mark.parametrize(("members", "factor", "partitions", "digest"), GOLDEN)
def test_placement_is_the_same_as_before(
    members: list[str], factor: int, partitions: int, digest: str
) -> None:
    assert placement_digest(Ring(members, factor, partitions)) == digest


@settings(max_examples=60, deadline=None)
@given(
    before=st.sets(st.sampled_from([f"n{i}" for i in range(24)]), max_size=24),
    after=st.sets(st.sampled_from([f"n{i}" for i in range(24)]), max_size=24),
    factor=st.integers(1, 5),
)
def test_a_changed_ring_is_exactly_a_fresh_one(
    before: set[str], after: set[str], factor: int
) -> None:
    changed = Ring(before, factor, 128).with_members(after)
    fresh = Ring(after, factor, 128)
    assert changed.members == fresh.members
    assert [changed.partition_owners(p) for p in range(128)] == [
        fresh.partition_owners(p) for p in range(128)
    ]


def test_one_member_joining_or_leaving_a_ring_of_1000_is_quick() -> None:
    """The bound the node relies on to apply such a change on its event loop.

    Measured on a loaded 2-core host: a fresh ring of 1,000 members ~0.7 s (was 6.7 s),
    one joining ~5-8 ms, one leaving ~10-20 ms; the bound is generous for slow hosts.
    """
    members = [f"node-{i}" for i in range(1000)]
    ring = Ring(members, 3)
    timings = []
    for change in ([*members, "newcomer"], members[1:], [*members[2:], "other"]):
        # The CPU the change takes, best of three: the suite runs beside other test
        # processes on two cores, and time spent waiting for a core or in a collection
        # of the test process's own garbage is not the change's.
        best = float("inf")
        for _ in range(3):
            gc.disable()
            try:
                started = time.thread_time()
                changed = ring.with_members(change)
                best = min(best, time.thread_time() - started)
            finally:
                gc.enable()
        timings.append(best)
        assert changed.members == tuple(sorted(change))
        assert ring.change_cost(change) <= RING_INLINE_COST
    assert max(timings) < 0.25, timings
