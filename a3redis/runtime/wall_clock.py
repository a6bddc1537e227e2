"""The node's one wall clock.

Rules: every wall-clock reading that feeds a version goes through the
function `wall_clock` returns; the core never reads a clock itself. Timers
and timeouts use trio's monotonic clock instead, so a wall-clock step never
stretches a sleep. The offset (A3REDIS_CLOCK_OFFSET_MS) exists for tests
that skew one node's clock: libfaketime breaks Python's sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def wall_clock(offset_ms: int = 0) -> Callable[[], int]:
    if not offset_ms:
        return wall_ms

    def skewed() -> int:
        return wall_ms() + offset_ms

    return skewed
