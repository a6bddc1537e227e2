"""Placement properties of the rendezvous-hash ring."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.core.ring import Ring, partition_of

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
