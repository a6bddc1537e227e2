"""Token buckets, log throttles and tallies: bounded whatever keys a remote party picks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from a3redis.core.throttle import LogThrottle, Tally, TokenBuckets


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    buckets = TokenBuckets(rate=10.0, burst=5.0, max_keys=8)
    assert [buckets.allow("a", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not buckets.allow("a", 0.05)  # half a token
    assert buckets.allow("a", 0.1)  # one token earned since the last look
    assert not buckets.allow("a", 0.1)
    # Another key has its own bucket.
    assert buckets.allow("b", 0.1)
    # Idle time fills the bucket up to the burst, not beyond.
    assert [buckets.allow("a", 100.0) for _ in range(6)] == [True] * 5 + [False]


def test_a_clock_that_goes_back_earns_nothing() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1.0, max_keys=8)
    assert buckets.allow("a", 10.0)
    assert not buckets.allow("a", 5.0)
    assert not buckets.allow("a", 10.5)


@given(keys=st.lists(st.text(max_size=5), max_size=300), burst=st.integers(1, 4))
def test_buckets_never_hold_more_than_max_keys_and_never_allow_more_than_burst(
    keys: list[str], burst: int
) -> None:
    buckets = TokenBuckets(rate=1.0, burst=burst, max_keys=16)
    allowed: dict[str, int] = {}
    for key in keys:
        allowed[key] = allowed.get(key, 0) + buckets.allow(key, 0.0)
        assert len(buckets) <= 16
    if len(set(keys)) <= 16:  # nobody evicted: nobody got a fresh bucket
        assert all(count <= burst for count in allowed.values())


def test_a_log_line_per_key_per_interval_with_the_count_held_back() -> None:
    throttle = LogThrottle(interval=60.0, max_keys=2)
    assert throttle.should_log("a", 0.0) == (True, 0)
    assert throttle.should_log("a", 1.0) == (False, 0)
    assert throttle.should_log("a", 2.0) == (False, 0)
    assert throttle.should_log("b", 2.0) == (True, 0)
    assert throttle.should_log("a", 61.0) == (True, 2)
    assert throttle.should_log("c", 61.0) == (True, 0)
    assert len(throttle) == 2  # "b" was the least recently seen


def test_a_tally_keeps_a_bounded_number_of_series() -> None:
    tally = Tally(max_series=2)
    tally.add(("gossip", "invalid"))
    tally.add(("gossip", "invalid"))
    tally.add(("gossip", "rate_limited"))
    tally.add(("gossip", "something-else"), 5)
    assert tally.counts == {
        ("gossip", "invalid"): 2,
        ("gossip", "rate_limited"): 1,
        ("overflow", "overflow"): 5,
    }
    assert tally.total() == 8
