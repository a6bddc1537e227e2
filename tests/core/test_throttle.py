"""Token buckets, log throttles and tallies: bounded whatever keys a remote party picks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from a3redis.core.throttle import BackgroundPace, LogThrottle, Tally, TokenBuckets


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


def test_background_copying_runs_at_the_idle_rate_while_nothing_is_served() -> None:
    pace = BackgroundPace(idle_rate=1000, busy_rate=100, busy_above=20, now=0.0)
    assert pace.book(500, started=0.0, now=0.1, served=0) == 0.5
    assert pace.next_start(0.2, served=0) == 0.5
    assert pace.book(500, started=0.5, now=0.6, served=0) == 1.0
    assert not pace.busy


def test_background_copying_slows_to_the_busy_rate_while_requests_are_served() -> None:
    pace = BackgroundPace(idle_rate=1000, busy_rate=100, busy_above=20, now=0.0)
    # 30 requests a second over a full window: busy.
    assert pace.book(100, started=1.0, now=1.0, served=30) == 2.0
    assert pace.busy and pace.foreground_rate == 30
    # Requests stop: after the next full window the idle rate is back.
    pace.measure(2.0, served=30)
    assert not pace.busy
    assert pace.book(100, started=2.0, now=2.0, served=30) == 2.1


def test_a_window_shorter_than_half_a_second_does_not_change_the_rate() -> None:
    pace = BackgroundPace(idle_rate=1000, busy_rate=100, busy_above=20, now=0.0)
    pace.measure(0.4, served=1000)
    assert not pace.busy
    pace.measure(0.5, served=1000)
    assert pace.busy


def test_the_time_a_batch_took_counts_and_an_idle_pause_earns_no_burst() -> None:
    pace = BackgroundPace(idle_rate=1000, busy_rate=100, busy_above=20, now=0.0)
    # A batch of 100 keys that itself took 0.3 s is due at once.
    assert pace.book(100, started=0.0, now=0.3, served=0) == 0.3
    # Ten idle seconds later a batch is still paced from its own start.
    assert pace.book(1000, started=10.0, now=10.1, served=0) == 11.0


def test_a_rate_of_zero_is_no_limit() -> None:
    pace = BackgroundPace(idle_rate=0, busy_rate=0, busy_above=20, now=0.0)
    assert pace.book(10**9, started=0.0, now=0.1, served=0) == 0.1
    assert pace.next_start(0.1, served=10**6) == 0.1


@given(
    st.lists(
        st.tuples(st.integers(0, 5000), st.floats(0.0, 2.0), st.integers(0, 200)),
        min_size=1,
        max_size=50,
    )
)
def test_copying_never_goes_faster_than_the_idle_rate(
    batches: list[tuple[int, float, int]],
) -> None:
    idle_rate = 1000.0
    pace = BackgroundPace(idle_rate=idle_rate, busy_rate=100, busy_above=20, now=0.0)
    now, served, copied = 0.0, 0, 0
    for keys, took, requests in batches:
        started = pace.next_start(now, served)
        served += requests
        now = pace.book(keys, started, started + took, served)
        copied += keys
    assert copied <= idle_rate * now + 1e-6
