"""The cyclic garbage collector's young passes, paced by time.

Rules: CPython starts a young-generation pass when the objects allocated
since the last one outnumber those freed by GC_THRESHOLDS[0] (a3redis.node).
A node overwriting keys allocates a new record for every one it frees, so
that count stands still while every record written since the last pass waits
in the young generation: the next pass, whenever it comes, walks all of them
at once and stalls the event loop for tens or hundreds of milliseconds. A
node therefore also runs a young pass every YOUNG_PASS_INTERVAL, each walking
only what the last interval left alive (a fraction of a millisecond). The
older generations follow CPython's own counts, which these passes advance.
"""

from __future__ import annotations

import gc

import trio

# How often a young-generation pass runs at least. The figures:
# benchmarks/README.md, "The collector's young passes".
YOUNG_PASS_INTERVAL = 0.05


async def pace_young_passes(
    stop: trio.Event,
    interval: float = YOUNG_PASS_INTERVAL,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a young-generation pass every `interval` seconds until `stop` is set."""
    task_status.started()
    while not stop.is_set():
        with trio.move_on_after(interval):
            await stop.wait()
        if gc.isenabled():  # paused (a store's recovery): not ours to run
            gc.collect(0)
