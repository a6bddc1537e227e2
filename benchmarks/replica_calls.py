"""A peer's Read and Apply calls to one node, over gRPC and as replica frames, same run.

`python -m benchmarks.replica_calls` starts one node (REPLICATION_FACTOR=1,
FSYNC=always), fills it with keys, and makes the calls a coordinator's peer
link makes (a3redis.api.replica_calls.ReplicaCalls): one call at a time, as
a link's calls of one kind go, with 1 and with 50 keys (Read) or records of
100-byte values (Apply), alternating gRPC and frames round by round. For
each it prints the calls per second, the client's CPU per call (this
process) and the node's (from /proc), medians over the rounds, and the
ratio frames / gRPC. Bounded: `--calls` per case and round, `--rounds`.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

from a3redis.api.replica_calls import ReplicaCalls
from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.net.address import Address
from a3redis.net.channels import ChannelPool
from benchmarks.procfs import cpu_seconds
from benchmarks.servers import HOST, ServerSet

VALUE = b"v" * 100
KEYS = 10_000
SIZES = (1, 50)


def _records(count: int, round_: int) -> list[Record]:
    wall = time.time_ns() // 1_000_000
    return [
        Record(b"key:%06d" % (i % KEYS), VALUE, Version(wall, round_ * 1000 + i, "node-9"))
        for i in range(count)
    ]


async def _timed(
    call: Callable[[], Awaitable[object]], calls: int, node_pid: int
) -> tuple[float, float, float]:
    """(calls per second, client CPU µs per call, node CPU µs per call)."""
    await call()  # the connection opens outside the timing
    node_before = cpu_seconds(node_pid)
    cpu_before, started = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await call()
    elapsed = time.perf_counter() - started
    client = (time.process_time() - cpu_before) / calls * 1e6
    node = (cpu_seconds(node_pid) - node_before) / calls * 1e6
    return calls / elapsed, client, node


async def _measure(
    endpoint: str, node_pid: int, calls: int, rounds: int
) -> dict[str, list[tuple[float, float, float]]]:
    address = Address.parse(endpoint)
    found: dict[str, list[tuple[float, float, float]]] = {}
    async with ChannelPool.open() as channels:
        loader = ReplicaCalls(channels, address, "node-9", frames=False)
        for start in range(0, KEYS, 500):
            await loader.apply(
                [
                    Record(b"key:%06d" % i, VALUE, Version(1, 0, "node-9"))
                    for i in range(start, start + 500)
                ]
            )
        for round_ in range(rounds):
            for way in ("grpc", "frames"):
                calls_of = ReplicaCalls(channels, address, "node-9", frames=way == "frames")
                for size in SIZES:
                    keys = [b"key:%06d" % (i * 97 % KEYS) for i in range(size)]
                    read = functools.partial(calls_of.read, keys)
                    found.setdefault(f"Read {size} {way}", []).append(
                        await _timed(read, calls, node_pid)
                    )
                    apply = functools.partial(calls_of.apply, _records(size, round_))
                    found.setdefault(f"Apply {size} {way}", []).append(
                        await _timed(apply, calls, node_pid)
                    )
    return found


def report(found: dict[str, list[tuple[float, float, float]]]) -> str:
    lines = [
        "| call | keys | way | calls/s | client CPU µs/call | node CPU µs/call |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    medians = {
        case: tuple(statistics.median(run[i] for run in runs) for i in range(3))
        for case, runs in found.items()
    }
    for case, (rate, client, node) in sorted(medians.items()):
        call, keys, way = case.split()
        lines.append(f"| {call} | {keys} | {way} | {rate:,.0f} | {client:,.0f} | {node:,.0f} |")
    lines.append("")
    for call in ("Read", "Apply"):
        for size in SIZES:
            grpc, frames = medians[f"{call} {size} grpc"], medians[f"{call} {size} frames"]
            lines.append(
                f"{call} of {size}: frames / gRPC calls/s {frames[0] / grpc[0]:.2f}, "
                f"client CPU {frames[1] / grpc[1]:.2f}, node CPU {frames[2] / grpc[2]:.2f}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="a3redis-replica-calls-") as root,
        ServerSet(Path(root)) as servers,
    ):
        node = servers.start_node(
            "node", Path(root) / "node", {"REPLICATION_FACTOR": "1", "FSYNC": "always"}
        )
        found = trio.run(_measure, f"{HOST}:{node.grpc_port}", node.pid, args.calls, args.rounds)
    print(f"one node, {os.cpu_count()} CPUs, {args.rounds} rounds of {args.calls} calls per case")
    print(report(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
