"""Bounded throttles for what remote parties can trigger: rates, log lines, counters.

Rules:
- Time is an argument (`now`, monotonic seconds); nothing here reads a clock.
- Every table keyed by something a remote party chooses (an address, a
  sender id) is bounded: the least recently used key is forgotten first. A
  forgotten sender's bucket starts full again, which is harmless: the bound
  on keys bounds the memory, and the rate per key bounds the work.
- `TokenBuckets.allow` is the whole admission decision for one request;
  `LogThrottle.should_log` says whether a line about a key may be written now
  (at most once per key per interval) and how many were held back since.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One token bucket per key: `rate` requests per second, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: float, max_keys: int) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be positive, burst and max_keys at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        """Take one token from `key`'s bucket if it has one."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            # A clock that went back (it never should) earns nothing.
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated = max(bucket.updated, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def __len__(self) -> int:
        return len(self._buckets)


class LogThrottle:
    """At most one log line per key per `interval`; remembers at most `max_keys` keys."""

    def __init__(self, interval: float, max_keys: int = 1024) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def should_log(self, key: str, now: float) -> tuple[bool, int]:
        """(whether to log now, how many lines about `key` were held back before this one)."""
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval:
            self._last[key] = (last[0], last[1] + 1)
            self._last.move_to_end(key)
            return False, 0
        held_back = 0 if last is None else last[1]
        self._last[key] = (now, 0)
        self._last.move_to_end(key)
        if len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True, held_back

    def __len__(self) -> int:
        return len(self._last)


class Tally:
    """Counts by a tuple of labels, for metrics; at most `max_series` label tuples (and
    one `overflow` tuple).

    Labels must come from small fixed sets (an endpoint, a reason), never from
    input; the bound is a backstop that keeps a mistake from growing without
    end (further new series are counted under the `overflow` tuple).
    """

    def __init__(self, max_series: int = 256) -> None:
        self.max_series = max_series
        self.counts: dict[tuple[str, ...], int] = {}

    def add(self, labels: tuple[str, ...], amount: int = 1) -> None:
        if labels not in self.counts and len(self.counts) >= self.max_series:
            labels = ("overflow",) * len(labels)
        self.counts[labels] = self.counts.get(labels, 0) + amount

    def total(self) -> int:
        return sum(self.counts.values())
