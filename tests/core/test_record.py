"""The last-write-wins merge is a semilattice join over records of one key."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3redis.core.hlc import Version
from a3redis.core.record import Record, merge, supersedes
from tests.core.strategies import keys, payloads, records_of, versions

one_key_records = keys.flatmap(lambda key: st.lists(records_of(key), min_size=1, max_size=8))
pairs = keys.flatmap(lambda key: st.tuples(records_of(key), records_of(key)))
triples = keys.flatmap(lambda key: st.tuples(records_of(key), records_of(key), records_of(key)))


@given(pairs)
def test_merge_is_commutative(pair: tuple[Record, Record]) -> None:
    a, b = pair
    assert merge(a, b) == merge(b, a)


@given(triples)
def test_merge_is_associative(triple: tuple[Record, Record, Record]) -> None:
    a, b, c = triple
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@given(keys.flatmap(records_of))
def test_merge_is_idempotent(record: Record) -> None:
    assert merge(record, record) == record
    # An equal record that is a different object merges to the same value.
    copy = Record(
        bytes(record.key), record.value, Version(*record.version), int(record.expires_at_ms)
    )
    assert merge(record, copy) == record


@given(pairs)
def test_merge_returns_one_of_its_inputs(pair: tuple[Record, Record]) -> None:
    a, b = pair
    result = merge(a, b)
    assert result is a or result is b


@given(pairs)
def test_merge_is_the_upper_bound(pair: tuple[Record, Record]) -> None:
    a, b = pair
    result = merge(a, b)
    # The join absorbs both inputs: merging either back in changes nothing.
    assert merge(result, a) == result
    assert merge(result, b) == result


@given(pairs)
def test_greater_version_wins_whatever_the_payload(pair: tuple[Record, Record]) -> None:
    a, b = pair
    if a.version > b.version:
        assert merge(a, b) is a
        assert supersedes(a, b)
        assert not supersedes(b, a)
    elif b.version > a.version:
        assert merge(a, b) is b


@given(keys, versions, payloads)
def test_a_tie_with_identical_payload_does_not_supersede(
    key: bytes, version: Version, value: bytes | None
) -> None:
    old = Record(key, value, version)
    new = Record(key, None if value is None else bytes(value), Version(*version))
    assert not supersedes(new, old)
    assert not supersedes(old, new)


@given(pairs)
def test_supersedes_is_a_strict_total_order(pair: tuple[Record, Record]) -> None:
    a, b = pair
    if a == b:
        assert not supersedes(a, b)
        assert not supersedes(b, a)
    else:
        # Same version with a different payload still has exactly one winner.
        assert supersedes(a, b) != supersedes(b, a)


@given(keys.flatmap(records_of))
def test_anything_supersedes_nothing(record: Record) -> None:
    assert supersedes(record, None)


@given(keys, versions)
def test_tombstone_and_empty_value_of_one_version_are_ordered(key: bytes, version: Version) -> None:
    tombstone = Record(key, None, version)
    empty = Record(key, b"", version)
    assert merge(tombstone, empty) == merge(empty, tombstone)
    assert supersedes(empty, tombstone) != supersedes(tombstone, empty)


def test_newer_tombstone_deletes_and_newer_value_resurrects() -> None:
    old_value = Record(b"k", b"v", Version(1, 0, "a"))
    tombstone = Record(b"k", None, Version(2, 0, "a"))
    new_value = Record(b"k", b"w", Version(2, 1, "a"))
    assert merge(old_value, tombstone) is tombstone
    assert merge(tombstone, old_value) is tombstone
    assert merge(tombstone, new_value) is new_value
    assert tombstone.is_tombstone
    assert not new_value.is_tombstone


def test_node_id_breaks_a_tie_of_wall_and_logical() -> None:
    low = Record(b"k", b"zzz", Version(5, 5, "a"))
    high = Record(b"k", b"aaa", Version(5, 5, "b"))
    assert merge(low, high) is high
    assert merge(high, low) is high


def test_merging_different_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="different keys"):
        merge(Record(b"a", b"v", Version(1, 0, "n")), Record(b"b", b"v", Version(1, 0, "n")))


@given(one_key_records.flatmap(lambda rs: st.tuples(st.just(rs), st.permutations(rs))))
def test_folding_any_permutation_gives_the_same_record(
    lists: tuple[list[Record], list[Record]],
) -> None:
    original, permuted = lists
    expected = functools.reduce(merge, original)
    assert functools.reduce(merge, permuted) == expected
    assert expected in original
    assert all(not supersedes(record, expected) for record in original)


def test_apply_outcomes_tell_a_duplicate_from_a_lost_write() -> None:
    from a3redis.core.record import ApplyOutcome, outcome

    old = Record(b"k", b"a", Version(1, 0, "n"))
    new = Record(b"k", b"b", Version(2, 0, "n"))
    assert outcome(new, True, new) is ApplyOutcome.STORED
    assert outcome(old, False, old) is ApplyOutcome.DUPLICATE
    assert outcome(old, False, new) is ApplyOutcome.SUPERSEDED
    assert outcome(old, False, None) is ApplyOutcome.SUPERSEDED
