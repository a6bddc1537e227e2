"""Anti-entropy cost: bytes, round trips, wall time and CPU of one repair round.

Run: `python -m benchmarks.repair [--keys 100000 1000000]`. Two real node
processes (replication factor 2, so they share every partition) are loaded
with n keys of 100 bytes; then, for each d, d keys are changed on node-1
only (LOCAL writes) and node-1 runs one round (`Repair`, wait) against
node-2. Reported: bytes both ways, calls, the round's wall time, and the CPU
time both processes spent (from /proc). The first round, which builds the
Merkle index in a worker thread, is a warm-up and not reported.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import trio

from a3redis.client import Client
from a3redis.core.consistency import Consistency
from benchmarks.gossip import cpu_seconds
from benchmarks.servers import ServerProcess, ServerSet

DIVERGENCE = (0, 1, 10, 100, 1000)
# Two nodes that share every partition (RF=2).
PAIR_SETTINGS = {
    "REPLICATION_FACTOR": "2",
    "FSYNC": "no",  # loading speed; repair cost does not depend on it
    "SYNC_INTERVAL": "86400",  # no automatic rounds: we start them
    "REPAIR_MAX_KEYS_PER_SECOND": "0",  # measure the exchange itself, unpaced
}
VALUE = b"v" * 100


async def measure(keys: int) -> list[dict[str, Any]]:
    base = Path(tempfile.mkdtemp(prefix="a3r-repair-"))
    rows: list[dict[str, Any]] = []
    try:
        with ServerSet(base) as servers:
            processes = servers.start_cluster("r", 2, PAIR_SETTINGS)
            await _measure(processes, keys, rows)
            for process in processes:
                process.stop(30)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return rows


async def _measure(processes: list[ServerProcess], keys: int, rows: list[dict[str, Any]]) -> None:
    """Load `keys` keys on both, then for each divergence d one round, appended to `rows`."""
    async with Client.connect(processes[0].target, request_timeout=120) as client:
        for start in range(0, keys, 2000):
            stop = min(keys, start + 2000)
            await client.batch_put(
                [(b"key-%09d" % i, VALUE) for i in range(start, stop)], Consistency.ALL
            )
        # Warm-up: both nodes build their Merkle index at start, in a worker thread;
        # wait until a round goes through without being skipped.
        for _ in range(60):
            (warm,) = await client.repair(wait=True)
            if not warm["skipped"]:
                break
            await trio.sleep(1)
        for d in DIVERGENCE:
            step = max(1, keys // max(d, 1))
            for i in range(d):
                await client.put(b"key-%09d" % (i * step), b"changed", Consistency.LOCAL)
            cpu_before = [cpu_seconds(p.pid) for p in processes]
            (report,) = await client.repair(wait=True)
            cpu_after = [cpu_seconds(p.pid) for p in processes]
            rows.append(
                {
                    "keys": keys,
                    "divergent": d,
                    "bytes": report["bytes_sent"] + report["bytes_received"],
                    "calls": report["calls"],
                    "leaves": report["leaves"],
                    "pushed": report["keys_pushed"],
                    "seconds": report["seconds"],
                    "cpu_s": [round(a - b, 3) for a, b in zip(cpu_after, cpu_before, strict=True)],
                }
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, nargs="+", default=[100_000])
    args = parser.parse_args(argv)
    print(
        f"{'keys':>9} {'d':>5} {'bytes':>9} {'calls':>6} {'leaves':>7} {'pushed':>7} "
        f"{'seconds':>8} {'CPU s (node-1, node-2)':>24}"
    )
    for keys in args.keys:
        for row in trio.run(measure, keys):
            print(
                f"{row['keys']:>9} {row['divergent']:>5} {row['bytes']:>9} {row['calls']:>6} "
                f"{row['leaves']:>7} {row['pushed']:>7} {row['seconds']:>8.3f} "
                f"{row['cpu_s']!s:>24}"
            )


if __name__ == "__main__":
    main()
