"""Rolling rates and percentiles for the metrics summary."""

from __future__ import annotations

import random

from a3redis.core.window import RollingStats


def test_rates_and_percentiles_over_the_window() -> None:
    stats = RollingStats(window_s=60, rng=random.Random(1))
    for i in range(6000):  # 100 per second for 60 s, latencies 1..100 ms
        stats.record("Put", (i % 100 + 1) / 1000, now=1000 + i / 100)
    summary = stats.summary(now=1059.5)
    assert summary["Put"]["count"] == 6000
    assert summary["Put"]["ops_per_s"] == 100
    assert abs(summary["Put"]["p50_ms"] - 50) <= 2
    assert abs(summary["Put"]["p99_ms"] - 99) <= 2


def test_old_buckets_leave_the_window_and_memory_is_bounded() -> None:
    stats = RollingStats(window_s=10, rng=random.Random(2))
    for _ in range(100_000):
        stats.record("Get", 0.001, now=0.5)
    assert sum(len(b.samples) for b in stats._buckets["Get"]) <= 256
    stats.record("Get", 0.002, now=5.0)
    assert stats.summary(now=9.9)["Get"]["count"] == 100_001
    assert stats.summary(now=12.0)["Get"]["count"] == 1
    assert stats.summary(now=30.0) == {}


def test_a_busy_second_keeps_a_uniform_sample_of_its_latencies() -> None:
    stats = RollingStats(window_s=60, rng=random.Random(3))
    for i in range(100_000):  # one second, the latencies rising 0..1 s in arrival order
        stats.record("Put", i / 100_000, now=7.5)
    (bucket,) = stats._buckets["Put"]
    assert len(bucket.samples) == 256
    # Kept from early and late in the second alike: not the first 256, not the last.
    late = sum(sample >= 0.5 for sample in bucket.samples)
    assert 100 <= late <= 156
    summary = stats.summary(now=8.0)["Put"]
    assert summary["count"] == 100_000
    assert abs(summary["p50_ms"] - 500) <= 100
    assert summary["p99_ms"] >= 950


def test_counts_of_one_whole_second_by_operation_prefix() -> None:
    stats = RollingStats(window_s=60, rng=random.Random(4))
    for i in range(30):  # seconds 10, 11 and 12: 10 each
        stats.record("RESP GET", 0.001, now=10 + i / 10)
    for i in range(5):
        stats.record("RESP SET", 0.001, now=11.2 + i / 10)
        stats.record("Put", 0.001, now=11.5)
    assert stats.counted_in_second(11, "RESP ") == 15
    assert stats.counted_in_second(11) == 20
    assert stats.counted_in_second(12, "RESP ") == 10
    assert stats.counted_in_second(13, "RESP ") == 0  # nothing since
    assert stats.counted_in_second(9, "RESP ") == 0  # nothing before
