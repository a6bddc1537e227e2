"""Rolling per-operation rates and latency percentiles over the last minute.

Rules: one bucket per second per operation, holding a count and a bounded
sample of latencies (reservoir sampling by skips, with the caller's random source),
so memory stays fixed however heavy the traffic; buckets older than the
window are dropped when touched. Time and randomness are arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random

SAMPLES_PER_BUCKET = 256


@dataclass(slots=True)
class _Bucket:
    second: int
    count: int = 0
    samples: list[float] = field(default_factory=list)
    # Once `samples` is full: the count at which the next latency is kept, and the
    # weight that draws the skip to the one after (see RollingStats._skip).
    next_kept: int = 0
    weight: float = 1.0


class RollingStats:
    def __init__(self, window_s: int, rng: random.Random) -> None:
        self.window_s = window_s
        self._rng = rng
        self._buckets: dict[str, list[_Bucket]] = {}

    def record(self, operation: str, seconds: float, now: float) -> None:
        second = int(now)
        buckets = self._buckets.get(operation)
        if buckets is None:
            buckets = self._buckets[operation] = []
        if not buckets or buckets[-1].second != second:
            buckets.append(_Bucket(second))
            self._trim(buckets, second)
        bucket = buckets[-1]
        count = bucket.count = bucket.count + 1
        if count <= SAMPLES_PER_BUCKET:
            bucket.samples.append(seconds)
            if count == SAMPLES_PER_BUCKET:
                self._skip(bucket)
        elif count == bucket.next_kept:
            bucket.samples[int(self._rng.random() * SAMPLES_PER_BUCKET)] = seconds
            self._skip(bucket)

    def _skip(self, bucket: _Bucket) -> None:
        """Draw which later latency the full reservoir keeps next (Li's Algorithm L).

        Every latency of the second stays in the sample with the same chance, as
        when each one draws a slot, but most of them are only counted: at
        tens of thousands a second, a draw for each was a visible share of a
        request's cost.
        """
        rng = self._rng
        # 1 - random() is in (0, 1]: its logarithm is defined.
        bucket.weight *= math.exp(math.log(1.0 - rng.random()) / SAMPLES_PER_BUCKET)
        if bucket.weight >= 1.0:
            bucket.next_kept = bucket.count + 1
            return
        skipped = math.log(1.0 - rng.random()) / math.log(1.0 - bucket.weight)
        bucket.next_kept = bucket.count + int(skipped) + 1

    def _trim(self, buckets: list[_Bucket], second: int) -> None:
        while buckets and buckets[0].second <= second - self.window_s:
            buckets.pop(0)

    def counted_in_second(self, second: int, prefix: str = "") -> int:
        """How many of the operations whose name starts with `prefix` were recorded
        in the whole second `second` (as `int(now)` numbers them)."""
        total = 0
        for operation, buckets in self._buckets.items():
            if not operation.startswith(prefix):
                continue
            for bucket in reversed(buckets):
                if bucket.second <= second:
                    if bucket.second == second:
                        total += bucket.count
                    break
        return total

    def summary(self, now: float) -> dict[str, dict[str, float]]:
        """Per operation: ops/s over the window and p50/p99 latency in milliseconds."""
        second = int(now)
        result = {}
        for operation, buckets in self._buckets.items():
            self._trim(buckets, second)
            count = sum(b.count for b in buckets)
            if not count:
                continue
            samples = sorted(s for b in buckets for s in b.samples)
            result[operation] = {
                "ops_per_s": round(count / self.window_s, 3),
                "count": count,
                "p50_ms": round(_percentile(samples, 0.50) * 1000, 3),
                "p99_ms": round(_percentile(samples, 0.99) * 1000, 3),
            }
        return result


def _percentile(ordered: list[float], fraction: float) -> float:
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]
