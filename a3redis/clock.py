"""The node's one wall clock.

Rules: every wall-clock reading that feeds a version goes through `wall_ms`;
the core never reads a clock itself. Timers and timeouts use trio's
monotonic clock instead, so a wall-clock step never stretches a sleep.
"""

from __future__ import annotations

import time


def wall_ms() -> int:
    return time.time_ns() // 1_000_000
