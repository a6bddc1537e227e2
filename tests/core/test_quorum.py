"""N/R/W bookkeeping: when writes and reads are decided, and who needs read repair."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3redis.core.quorum import ReadQuorum, WriteQuorum
from tests.support.records import rec

REPLICAS = ("a", "b", "c")


@given(
    required=st.integers(1, 3),
    events=st.lists(st.tuples(st.sampled_from(REPLICAS), st.booleans()), max_size=10),
)
def test_write_decided_exactly_when_enough_acks_or_too_many_failures(
    required: int, events: list[tuple[str, bool]]
) -> None:
    quorum = WriteQuorum(REPLICAS, required)
    first: dict[str, bool] = {}
    for replica, ok in events:
        (quorum.ack if ok else quorum.fail)(replica)
        first.setdefault(replica, ok)
    acks = sum(first.values())
    failures = len(first) - acks
    assert quorum.succeeded == (acks >= required)
    assert quorum.impossible == (3 - failures < required)
    assert not (quorum.succeeded and quorum.impossible)


def test_acks_count_once_per_replica_and_strangers_are_ignored() -> None:
    quorum = WriteQuorum(REPLICAS, 2)
    quorum.ack("a")
    quorum.ack("a")
    quorum.ack("zz")
    assert not quorum.succeeded
    quorum.ack("b")
    assert quorum.succeeded


def test_impossible_requirements_are_refused() -> None:
    with pytest.raises(ValueError):
        WriteQuorum(REPLICAS, 4)
    with pytest.raises(ValueError):
        ReadQuorum((), 1)


def test_read_answers_with_the_newest_of_the_first_r_and_repairs_the_rest() -> None:
    quorum = ReadQuorum(REPLICAS, 2)
    quorum.answer("a", rec(b"k", b"v", 1))
    assert not quorum.succeeded
    quorum.answer("b", rec(b"k", b"v", 2))
    assert quorum.succeeded and quorum.result == rec(b"k", b"v", 2)
    # A later, newer answer does not change the decided result, but repair uses it.
    quorum.answer("c", rec(b"k", None, 3))
    assert quorum.result == rec(b"k", b"v", 2)
    assert quorum.complete
    assert quorum.stale() == {"a": rec(b"k", None, 3), "b": rec(b"k", None, 3)}


def test_a_missing_copy_is_stale_and_an_all_missing_key_needs_no_repair() -> None:
    quorum = ReadQuorum(REPLICAS, 2)
    quorum.answer("a", None)
    quorum.answer("b", rec(b"k", b"v", 5))
    quorum.fail("c")
    assert quorum.result == rec(b"k", b"v", 5)
    assert quorum.stale() == {"a": rec(b"k", b"v", 5)}
    empty = ReadQuorum(REPLICAS, 2)
    empty.answer("a", None)
    empty.answer("b", None)
    assert empty.succeeded and empty.result is None and empty.stale() == {}


def test_read_is_impossible_once_too_many_replicas_failed() -> None:
    quorum = ReadQuorum(REPLICAS, 2)
    quorum.fail("a")
    assert not quorum.impossible
    quorum.fail("b")
    assert quorum.impossible and not quorum.succeeded


def test_a_replica_holding_a_newer_version_is_remembered_as_superseded() -> None:
    quorum = WriteQuorum(REPLICAS, 2)
    quorum.ack("a")
    quorum.supersede("b")
    quorum.supersede("c")
    assert quorum.impossible and quorum.superseded == {"b", "c"}
    quorum.ack("b")  # a late, contradictory answer changes nothing
    assert not quorum.succeeded
