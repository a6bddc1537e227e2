"""Reading a process's CPU time and resident memory from /proc (Linux only).

Both the harness and the load generator use these, so server CPU is always
measured the same way: utime + stime of the whole process (all threads) and
of the processes it started that still run (a node's fsync child).
"""

from __future__ import annotations

import contextlib
import os
import time

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str = "self") -> float:
    """User plus system CPU seconds consumed so far by every thread of `pid` and, for
    another process than this one, by its running child processes (this process's
    children are the servers and clients it measures apart)."""
    own = _own_cpu_seconds(pid)
    if pid == "self":
        return own
    for child in _child_pids(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            own += _own_cpu_seconds(child)
    return own


def _child_pids(pid: int | str) -> list[int]:
    """The running children of `pid`, whichever of its threads started them."""
    children: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            path = f"/proc/{pid}/task/{task}/children"
            with contextlib.suppress(FileNotFoundError, ProcessLookupError), open(path, "rb") as f:
                children.extend(int(child) for child in f.read().split())
    return children


def _own_cpu_seconds(pid: int | str) -> float:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        stat = handle.read()
    # The command name (field 2) may contain spaces; fields after it start past ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_SECOND


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of `pid`, from VmRSS in /proc/<pid>/status."""
    with open(f"/proc/{pid}/status", "rb") as handle:
        for line in handle:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs together spent not idle (including steal), from /proc/stat."""
    with open("/proc/stat", "rb") as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user).
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLOCK_TICKS_PER_SECOND


def background_cores(seconds: float = 1.0) -> float:
    """How many CPUs' worth of work the machine does over `seconds` (call while idle)."""
    before, started = machine_busy_seconds(), time.monotonic()
    time.sleep(seconds)
    return (machine_busy_seconds() - before) / (time.monotonic() - started)
