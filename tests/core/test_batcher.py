"""The peer link's batcher, on fake time: which calls leave, when, and who gets which answer."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from a3redis.core.batcher import (
    GATHER_MIN_WAITERS,
    HOLD_BACK,
    KEEPALIVE_IDLE,
    KEEPALIVE_INTERVAL,
    MAX_BATCH,
    MAX_CALL_BYTES,
    MAX_READ_KEYS,
    Batcher,
    Call,
    CallQueue,
    keepalive_due,
)
from a3redis.core.hlc import Version
from a3redis.core.record import ApplyOutcome, Record
from a3redis.core.validation import record_bytes

MIB = 1024 * 1024


class Waiter:
    """Records how it was settled; settling twice is a bug the test must see."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.settlements: list[tuple[Any, Any]] = []

    def __repr__(self) -> str:
        return self.name


def answer(queue: CallQueue[Any, Any, Waiter], call: Call[Any, Waiter], results: list[Any]) -> None:
    for waiter, answers in queue.answered(call, results):
        waiter.settlements.append((answers, None))


def fail(queue: CallQueue[Any, Any, Waiter], call: Call[Any, Waiter]) -> None:
    for waiter in queue.failed(call):
        waiter.settlements.append((None, "unavailable"))


def calls_now(batcher: Batcher[Waiter], now: float) -> list[Call[Any, Waiter]]:
    """Every call that leaves at `now`, as the shell's sender loop takes them."""
    calls = []
    while batcher.ready(now):
        call = batcher.next_call(now)
        assert call is not None
        calls.append(call)
    assert batcher.next_call(now) is None
    return calls


def every_call(batcher: Batcher[Waiter], now: float) -> list[Call[Any, Waiter]]:
    """The calls that empty the queues, each ended (not yet answered) before the next."""
    calls: list[Call[Any, Waiter]] = []
    while batcher.waiting():
        for call in calls_now(batcher, now):
            batcher.ended(call)
            calls.append(call)
    return calls


def rec(key: bytes, value: bytes = b"v") -> Record:
    return Record(key, value, Version(1, 0, "node-1"))


def test_submissions_queued_together_leave_as_one_call_and_each_gets_its_slice() -> None:
    batcher: Batcher[Waiter] = Batcher()
    first, second, third = Waiter("first"), Waiter("second"), Waiter("third")
    batcher.reads.submit([b"a", b"b"], first)
    batcher.reads.submit([b"c"], second)
    batcher.reads.submit([b"d", b"e", b"f"], third)
    [call] = calls_now(batcher, now=0.0)
    assert call.queue is batcher.reads
    assert call.items == [b"a", b"b", b"c", b"d", b"e", b"f"]
    batcher.ended(call)
    answer(batcher.reads, call, ["A", "B", "C", "D", "E", "F"])
    assert first.settlements == [(["A", "B"], None)]
    assert second.settlements == [(["C"], None)]
    assert third.settlements == [(["D", "E", "F"], None)]


def test_while_a_call_of_its_kind_is_out_what_comes_in_waits_until_it_ends_or_hold_back() -> None:
    batcher: Batcher[Waiter] = Batcher()
    batcher.applies.submit([rec(b"a")], Waiter("a"))
    [first] = calls_now(batcher, now=10.0)
    assert batcher.wake_at() is None  # nothing waits
    batcher.applies.submit([rec(b"b")], Waiter("b"))
    batcher.applies.submit([rec(b"c")], Waiter("c"))
    assert calls_now(batcher, now=10.0 + HOLD_BACK / 2) == []
    assert batcher.wake_at() == 10.0 + HOLD_BACK
    # The other kind is not held back by it.
    batcher.reads.submit([b"k"], Waiter("k"))
    [read] = calls_now(batcher, now=10.0 + HOLD_BACK / 2)
    assert read.queue is batcher.reads
    # The call's end wakes the sender, and what waited leaves as one call.
    assert batcher.ended(first) is True
    [second] = calls_now(batcher, now=10.0 + HOLD_BACK / 2)
    assert [r.key for r in second.items] == [b"b", b"c"]
    # A call out for HOLD_BACK holds nothing back any more.
    batcher.applies.submit([rec(b"d")], Waiter("d"))
    assert calls_now(batcher, now=10.0 + HOLD_BACK) == []
    [third] = calls_now(batcher, now=10.0 + HOLD_BACK / 2 + HOLD_BACK)
    assert [r.key for r in third.items] == [b"d"]


def test_a_link_lags_while_its_oldest_call_has_been_out_for_hold_back() -> None:
    batcher: Batcher[Waiter] = Batcher()
    assert not batcher.lagging(10.0)
    batcher.applies.submit([rec(b"a")], Waiter("a"))
    [first] = calls_now(batcher, now=10.0)
    batcher.reads.submit([b"k"], Waiter("k"))
    [second] = calls_now(batcher, now=10.0 + HOLD_BACK / 2)
    assert not batcher.lagging(10.0 + HOLD_BACK / 2)
    assert batcher.lagging(10.0 + HOLD_BACK)  # the first call's age counts
    batcher.ended(first)
    assert not batcher.lagging(10.0 + HOLD_BACK)  # the second is younger
    assert batcher.lagging(10.0 + HOLD_BACK / 2 + HOLD_BACK)
    batcher.ended(second)
    assert not batcher.lagging(100.0)


def test_a_full_call_leaves_without_waiting_for_the_call_out() -> None:
    batcher: Batcher[Waiter] = Batcher()
    batcher.reads.submit([b"first"], Waiter("first"))
    calls_now(batcher, now=0.0)
    keys = [b"k%d" % i for i in range(MAX_READ_KEYS - 1)]
    batcher.reads.submit(keys, Waiter("almost"))
    assert calls_now(batcher, now=0.0) == []
    batcher.reads.submit([b"last"], Waiter("full"))
    [call] = calls_now(batcher, now=0.0)
    assert len(call.items) == MAX_READ_KEYS


def test_a_call_gathers_only_after_a_shared_call_and_with_none_of_its_kind_out() -> None:
    batcher: Batcher[Waiter] = Batcher()
    batcher.reads.submit([b"a"], Waiter("a"))
    assert not batcher.should_gather()  # no call yet: nothing says calls are shared
    [alone] = calls_now(batcher, now=0.0)
    batcher.ended(alone)
    batcher.reads.submit([b"b"], Waiter("b"))
    assert not batcher.should_gather()  # the latest call carried one submission
    for i in range(GATHER_MIN_WAITERS - 1):
        batcher.reads.submit([b"c%d" % i], Waiter("c"))
    [shared] = calls_now(batcher, now=1.0)
    assert len(shared.entries) == GATHER_MIN_WAITERS
    batcher.reads.submit([b"d"], Waiter("d"))
    assert not batcher.should_gather()  # a call of its kind is out: it waits for that
    batcher.ended(shared)
    assert batcher.should_gather()
    calls_now(batcher, now=2.0)
    assert not batcher.should_gather()  # nothing queued


def test_apply_calls_are_bounded_by_the_bytes_of_their_records() -> None:
    batcher: Batcher[Waiter] = Batcher()
    value = b"x" * MIB
    records = [rec(b"k%02d" % i, value) for i in range(40)]
    waiters = [Waiter(f"w{i}") for i in range(40)]
    for record, waiter in zip(records, waiters, strict=True):
        batcher.applies.submit([record], waiter)
    [first] = calls_now(batcher, now=0.0)
    assert len(first.items) == 29  # 29 MiB and some keys; a 30th would exceed the bound
    assert sum(map(record_bytes, first.items)) <= MAX_CALL_BYTES
    batcher.ended(first)  # the rest is not a full call: it waited for this one
    [second] = calls_now(batcher, now=0.0)
    assert first.items + second.items == records  # in order
    for call in (first, second):
        answer(batcher.applies, call, [ApplyOutcome.STORED] * len(call.items))
    assert all(w.settlements == [([ApplyOutcome.STORED], None)] for w in waiters)


def test_apply_calls_carry_at_most_max_batch_records() -> None:
    batcher: Batcher[Waiter] = Batcher()
    for i in range(MAX_BATCH + 1):
        batcher.applies.submit([rec(b"k%d" % i)], Waiter(f"w{i}"))
    assert [len(c.items) for c in every_call(batcher, now=0.0)] == [MAX_BATCH, 1]


def test_a_submission_that_fits_a_call_of_its_own_is_not_split_but_leads_the_next() -> None:
    batcher: Batcher[Waiter] = Batcher()
    batcher.reads.submit([b"a%d" % i for i in range(100)], Waiter("a"))
    batcher.reads.submit([b"b%d" % i for i in range(100)], Waiter("b"))
    assert [len(c.items) for c in every_call(batcher, now=0.0)] == [100, 100]


def test_a_submission_too_large_for_one_call_is_split_and_settled_once_in_order() -> None:
    batcher: Batcher[Waiter] = Batcher()
    small, large, after = Waiter("small"), Waiter("large"), Waiter("after")
    keys = [b"k%d" % i for i in range(2 * MAX_READ_KEYS + 10)]
    batcher.reads.submit([b"s"], small)
    batcher.reads.submit(keys, large)
    batcher.reads.submit([b"t"], after)
    calls = every_call(batcher, now=0.0)
    assert [len(c.items) for c in calls] == [MAX_READ_KEYS, MAX_READ_KEYS, 12]
    assert [k for c in calls for k in c.items] == [b"s", *keys, b"t"]
    for call in reversed(calls):  # answers may come in any order
        assert large.settlements == []  # until its last part is answered
        answer(batcher.reads, call, [k.upper() for k in call.items])
    assert small.settlements == [([b"S"], None)]
    assert large.settlements == [([k.upper() for k in keys], None)]
    assert after.settlements == [([b"T"], None)]


def test_a_single_record_over_the_byte_bound_goes_alone() -> None:
    batcher: Batcher[Waiter] = Batcher()
    huge = rec(b"huge", b"x" * (MAX_CALL_BYTES + 1))
    last = rec(b"last", b"x" * (MAX_CALL_BYTES + 1))
    one, two = Waiter("one"), Waiter("two")
    batcher.applies.submit([rec(b"a"), huge, rec(b"b")], one)
    batcher.applies.submit([rec(b"c"), last], two)
    calls = every_call(batcher, now=0.0)
    assert [[r.key for r in c.items] for c in calls] == [
        [b"a"],
        [b"huge"],
        [b"b", b"c"],
        [b"last"],
    ]
    for call in calls:
        answer(batcher.applies, call, [r.key for r in call.items])
    assert one.settlements == [([b"a", b"huge", b"b"], None)]
    assert two.settlements == [([b"c", b"last"], None)]


def test_a_failed_call_fails_every_submission_it_carried_once() -> None:
    batcher: Batcher[Waiter] = Batcher()
    first, second = Waiter("first"), Waiter("second")
    batcher.applies.submit([rec(b"a"), rec(b"b")], first)
    batcher.applies.submit([rec(b"c")], second)
    [call] = calls_now(batcher, now=0.0)
    batcher.ended(call)
    fail(batcher.applies, call)
    assert first.settlements == [(None, "unavailable")]
    assert second.settlements == [(None, "unavailable")]


def test_a_split_submission_fails_with_its_first_failed_part_and_its_rest_is_not_sent() -> None:
    batcher: Batcher[Waiter] = Batcher(max_in_flight=2)
    large, after = Waiter("large"), Waiter("after")
    batcher.reads.submit([b"k%d" % i for i in range(3 * MAX_READ_KEYS)], large)
    batcher.reads.submit([b"t"], after)
    first, second = calls_now(batcher, now=0.0)  # the third part waits for a slot
    batcher.ended(second)
    fail(batcher.reads, second)
    batcher.ended(first)
    answer(batcher.reads, first, list(first.items))
    fail(batcher.reads, first)  # even a second failure settles nothing twice
    assert large.settlements == [(None, "unavailable")]
    [rest] = calls_now(batcher, now=0.0)
    assert rest.items == [b"t"]


def test_at_most_max_in_flight_calls_of_both_kinds_are_out() -> None:
    batcher: Batcher[Waiter] = Batcher(max_in_flight=2)
    batcher.applies.submit([rec(b"a")], Waiter("a"))
    batcher.reads.submit([b"r"], Waiter("r"))
    out = calls_now(batcher, now=0.0)
    assert len(out) == 2
    batcher.reads.submit([b"s"], Waiter("s"))
    assert calls_now(batcher, now=1.0) == []  # held back by nothing but the slots
    assert batcher.wake_at() is None  # only a call's end frees one
    assert batcher.ended(out[0]) is True  # so the shell wakes the sender
    [call] = calls_now(batcher, now=1.0)
    assert call.items == [b"s"]
    assert batcher.ended(out[1]) is False  # nothing waits


def test_closing_fails_every_queued_submission_once() -> None:
    batcher: Batcher[Waiter] = Batcher(max_in_flight=1)
    large, queued = Waiter("large"), Waiter("queued")
    batcher.reads.submit([b"k%d" % i for i in range(MAX_READ_KEYS + 1)], large)
    [part] = calls_now(batcher, now=0.0)
    batcher.applies.submit([rec(b"a")], queued)  # no slot for it
    dropped = list(batcher.drop())
    assert dropped == [queued, large]
    assert not batcher.waiting()
    for waiter in dropped:
        waiter.settlements.append((None, "closed"))
    batcher.ended(part)
    fail(batcher.reads, part)  # it was settled when its rest was dropped
    assert large.settlements == [(None, "closed")]


def test_keepalive_pings_a_link_in_use_that_has_not_heard_from_its_peer() -> None:
    assert keepalive_due(now=100.0, last_answer=100.0 - KEEPALIVE_INTERVAL, last_used=99.0)
    assert not keepalive_due(now=100.0, last_answer=99.0, last_used=99.0)
    assert not keepalive_due(
        now=100.0, last_answer=0.0, last_used=100.0 - KEEPALIVE_IDLE - 1
    )  # nobody needs it


@settings(max_examples=500)
@given(
    submissions=st.lists(st.lists(st.integers(0, 6), min_size=1, max_size=12), max_size=12),
    max_in_flight=st.integers(1, 3),
    seed=st.integers(0, 2**32),
)
def test_every_submission_is_settled_once_with_its_own_answers_in_order(
    submissions: list[list[int]], max_in_flight: int, seed: int
) -> None:
    """Random sizes, answer orders and failures: each submission is settled once,
    with the answers to its own items in order, or failed by a call that carried
    some of them; calls stay within their bounds and keep the submission order."""
    rng = random.Random(seed)
    queue: CallQueue[bytes, bytes, Waiter] = CallQueue(max_items=5, item_bytes=len, max_bytes=10)
    items_of = [
        [b"%d.%d." % (number, index) + b"x" * size for index, size in enumerate(sizes)]
        for number, sizes in enumerate(submissions)
    ]
    waiters = [Waiter(str(number)) for number in range(len(items_of))]
    for items, waiter in zip(items_of, waiters, strict=True):
        queue.submit(items, waiter)
    sent: list[bytes] = []
    failed: set[bytes] = set()  # the submissions (their numbers) a failed call carried
    out: list[Call[bytes, Waiter]] = []
    now = 0.0
    while queue.waiting() or out:
        now += HOLD_BACK
        while len(out) < max_in_flight and queue.due(now):
            call = queue.take(now)
            assert call.items  # never an empty call (every submission has items)
            assert len(call.items) <= 5
            assert len(call.items) == 1 or sum(map(len, call.items)) <= 10
            sent.extend(call.items)
            out.append(call)
        call = out.pop(rng.randrange(len(out)))
        queue.in_flight -= 1
        if rng.random() < 0.2:
            failed.update(item.split(b".")[0] for item in call.items)
            fail(queue, call)
        else:
            answer(queue, call, [item.upper() for item in call.items])
    for number, (items, waiter) in enumerate(zip(items_of, waiters, strict=True)):
        if b"%d" % number in failed:
            assert waiter.settlements == [(None, "unavailable")]
        else:
            assert waiter.settlements == [([item.upper() for item in items], None)]
    everything = [item for items in items_of for item in items]
    assert sent == [item for item in everything if item in set(sent)]
    assert all(item.split(b".")[0] in failed for item in everything if item not in set(sent))


@given(st.floats(0.0, 1e6))
def test_a_held_back_call_is_due_at_the_moment_wake_at_names(first_call: float) -> None:
    """The sender sleeps until wake_at(); if nothing is due then, a sender on a fake clock
    (trio's MockClock, the fault simulator) wakes at that same moment forever."""
    batcher: Batcher[Waiter] = Batcher()
    batcher.applies.submit([rec(b"a")], Waiter("a"))
    calls_now(batcher, now=first_call)
    batcher.applies.submit([rec(b"b")], Waiter("b"))
    wake_at = batcher.wake_at()
    assert wake_at == first_call + HOLD_BACK
    assert batcher.ready(wake_at)
