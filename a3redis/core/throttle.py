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
- `BackgroundPace` paces the copying of a join, decommission or removal on a
  node: copying yields to the requests the node serves. While the node has
  served more than `busy_above` requests per second over the last
  measurement window, copying runs at `busy_rate`; otherwise at
  `idle_rate`. Counting a request is one addition: the node counts every
  client and replica request it serves.
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


class BackgroundPace:
    """When the next batch of background copying may start, from how busy the node is.

    `served` is the node's running count of the requests it has served (a
    counter the shell keeps). A rate of 0 means no limit. The rate is a limit,
    not a pause per batch: `book` adds a batch's keys to a schedule, and the
    time the batch itself took counts toward it.
    """

    # The foreground rate is measured over windows at least this long (seconds).
    WINDOW = 0.5

    def __init__(
        self, idle_rate: float, busy_rate: float, busy_above: float, now: float, served: int = 0
    ) -> None:
        if idle_rate < 0 or busy_rate < 0 or busy_above < 0:
            raise ValueError("rates and busy_above must not be negative")
        self.idle_rate = idle_rate
        self.busy_rate = busy_rate
        self.busy_above = busy_above
        self.foreground_rate = 0.0
        self._window = (now, served)
        self._due = now

    @property
    def busy(self) -> bool:
        return self.foreground_rate > self.busy_above

    @property
    def rate(self) -> float:
        """Keys per second copying may take now (0: no limit)."""
        return self.busy_rate if self.busy else self.idle_rate

    def measure(self, now: float, served: int) -> None:
        """Close the measurement window if it is long enough."""
        started, served_then = self._window
        elapsed = now - started
        if elapsed >= self.WINDOW:
            self.foreground_rate = max(0, served - served_then) / elapsed
            self._window = (now, served)
        elif elapsed < 0:  # a clock that went back: start the window again
            self._window = (now, served)

    def next_start(self, now: float, served: int) -> float:
        """When the next batch may start (`now` or later)."""
        self.measure(now, served)
        return max(now, self._due)

    def book(self, keys: int, started: float, now: float, served: int) -> float:
        """Add `keys` keys, copied from `started` until `now`, to the schedule; when the
        next batch may start."""
        self.measure(now, served)
        rate = self.rate
        if rate <= 0:
            self._due = now
            return now
        # Idle time before `started` earns no credit: a pause is not saved up for a burst.
        self._due = max(self._due, started) + keys / rate
        return max(now, self._due)
