"""Counting what peers sent that a node refused, and deciding when to say so.

Rules: every refused record or entry is counted per (endpoint, reason), for
the `a3redis_rejected_total` metric; a log line is due at most once per
`log_interval_s` for each pair, and tells how many were refused meanwhile
without a line of their own, so a peer that sends garbage at full speed
cannot flood the log. Time is an argument (seconds, monotonic).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Rejections:
    log_interval_s: float = 10.0
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    _last_logged: dict[tuple[str, str], float] = field(default_factory=dict)
    _unlogged: dict[tuple[str, str], int] = field(default_factory=dict)

    def count(self, endpoint: str, reason: str, now: float) -> int | None:
        """Count one rejection; if a log line is due, how many went unlogged before it."""
        key = (endpoint, reason)
        self.counts[key] = self.counts.get(key, 0) + 1
        last = self._last_logged.get(key)
        if last is not None and now - last < self.log_interval_s:
            self._unlogged[key] = self._unlogged.get(key, 0) + 1
            return None
        self._last_logged[key] = now
        return self._unlogged.pop(key, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
