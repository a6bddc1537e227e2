"""Counting what peers sent that a node refused, and deciding when to say so.

Rules: every refused record or entry is counted per (endpoint, reason), for
the `a3redis_rejected_total` metric; a log line is due at most once per
`log_interval_s` for each pair, and tells how many were refused meanwhile
without a line of their own, so a peer that sends garbage at full speed
cannot flood the log. Time is an argument (seconds, monotonic). The counting
and the throttling are a3redis.core.throttle's, as for gossip's refusals.
"""

from __future__ import annotations

from a3redis.core.throttle import LogThrottle, Tally


class Rejections:
    def __init__(self, log_interval_s: float = 10.0) -> None:
        self.tally = Tally()
        self._log = LogThrottle(log_interval_s)

    @property
    def counts(self) -> dict[tuple[str, ...], int]:
        return self.tally.counts

    def count(self, endpoint: str, reason: str, now: float) -> int | None:
        """Count one rejection; if a log line is due, how many went unlogged before it."""
        self.tally.add((endpoint, reason))
        due, held_back = self._log.should_log(f"{endpoint} {reason}", now)
        return held_back if due else None

    @property
    def total(self) -> int:
        return self.tally.total()
