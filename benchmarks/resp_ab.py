"""Two builds of the node, one redis-benchmark case, alternating rounds: which is faster.

`python -m benchmarks.resp_ab BEFORE AFTER` starts one node from each source tree
(each run from its own directory, so each imports its own `a3redis`;
REPLICATION_FACTOR=1, FSYNC=always, a RESP port; with `--cluster`, three nodes
each, RF 3 at QUORUM, the rounds going through node 1), fills each with one round of
the case, then runs `redis-benchmark -c 50 -n N -d 100 -r 100000 -t TEST` on
them in turn, the order swapped every round. Per round it prints each node's
requests/s and its main thread's CPU µs per request (from `/proc`: the fsync
child and worker threads are left out, as they do not limit the loop); at the
end the medians and the per-round after/before ratios. On this shared host a
build's rounds spread by ±10 %, so a change of a few percent needs ten rounds or
more. A worktree makes the before tree: `git worktree add /tmp/before HEAD~1`.
Not part of the published benchmark (`benchmarks.run`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from benchmarks.resp import CLUSTER_SETTINGS, parse_output, serve
from benchmarks.servers import HOST
from tests.support.processes import free_port

_TICKS = os.sysconf("SC_CLK_TCK")


def _main_thread_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process's main thread so far."""
    with open(f"/proc/{pid}/task/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _start_node(
    stack: ExitStack, tree: Path, root: Path, settings: dict[str, str], grpc_port: int = 0
) -> tuple[int, int]:
    """A node of the source tree `tree`, its DATA_DIR under `root`: its pid and RESP port.
    Killed when `stack` closes."""
    data = Path(tempfile.mkdtemp(dir=root))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "DATA_DIR": str(data),
        "GRPC_PORT": str(grpc_port or free_port()),
        "GOSSIP_PORT": str(free_port()),
        "RESP_PORT": str(port),
        **settings,
    }
    command = [sys.executable, "-m", "a3redis.node"]
    name = f"a node of {tree}"
    endpoint = serve(stack, name, command, port, data / "output.log", env=env, cwd=tree)
    return endpoint.pids[0], port


def _start_build(stack: ExitStack, tree: Path, root: Path, cluster: bool) -> tuple[int, int]:
    """One node of `tree`, or three (`cluster`: each given the others as PEERS) once the
    first can write at QUORUM: the pid and RESP port of the node the rounds talk to."""
    if not cluster:
        return _start_node(stack, tree, root, {"REPLICATION_FACTOR": "1", "FSYNC": "always"})
    grpc_ports = [free_port() for _ in range(3)]
    started = []
    for number, grpc_port in enumerate(grpc_ports, start=1):
        peers = ",".join(f"{HOST}:{other}" for other in grpc_ports if other != grpc_port)
        settings = {**CLUSTER_SETTINGS, "NODE_NUM": str(number), "PEERS": peers}
        started.append(_start_node(stack, tree, root, settings, grpc_port))
    _wait_for_quorum(started[0][1])
    return started[0]


def _wait_for_quorum(port: int, timeout: float = 60.0) -> None:
    """Until a QUORUM SET through the node on `port` succeeds (its peers are alive)."""
    deadline = time.monotonic() + timeout
    while True:
        command = ["redis-cli", "-p", str(port), "SET", "a3redis-ab-probe", "1"]
        answer = subprocess.run(command, capture_output=True, text=True).stdout.strip()
        if answer == "OK":
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the cluster on port {port} did not take a QUORUM write: {answer}")
        time.sleep(0.2)


def _round(pid: int, port: int, test: str, requests: int) -> tuple[float, float]:
    """One redis-benchmark run: requests/s, and the node's main-thread CPU µs per request."""
    before = _main_thread_cpu(pid)
    command = ["redis-benchmark", "-p", str(port), "-c", "50", "-n", str(requests)]
    command += ["-d", "100", "-r", "100000", "-t", test, "--csv"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    spent = _main_thread_cpu(pid) - before
    figures = parse_output(output).get(test)
    if figures is None:
        raise SystemExit(f"redis-benchmark printed no {test} figures:\n{output[-2000:]}")
    return figures.rps, 1e6 * spent / requests


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="source tree of the first build")
    parser.add_argument("after", type=Path, help="source tree of the second build")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--test", default="set", help="redis-benchmark -t (default set)")
    parser.add_argument("--requests", type=int, default=200_000, help="redis-benchmark -n")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="three nodes per build (RF 3, QUORUM); the rounds go through node 1",
    )
    args = parser.parse_args(argv)
    if shutil.which("redis-benchmark") is None:
        raise SystemExit("redis-benchmark is not installed (apt-get install redis-tools)")
    names = ("before", "after")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="a3redis-ab-")))
        nodes = {
            name: _start_build(stack, tree.resolve(), root, args.cluster)
            for name, tree in zip(names, (args.before, args.after), strict=True)
        }
        for pid, port in nodes.values():
            _round(pid, port, "set", args.requests)  # keys for GETs; every SET an overwrite
        for index in range(args.rounds):
            for name in names if index % 2 == 0 else names[::-1]:
                rate, cpu = _round(*nodes[name], args.test, args.requests)
                results[name].append((rate, cpu))
                print(f"round {index + 1} {name}: {rate:,.0f}/s, {cpu:.1f} µs/request", flush=True)
    for name in names:
        rates = [rate for rate, _ in results[name]]
        cpus = [cpu for _, cpu in results[name]]
        print(f"{name}: median {statistics.median(rates):,.0f}/s, {statistics.median(cpus):.2f} µs")
    pairs = list(zip(results["before"], results["after"], strict=True))
    rate_ratios = [after[0] / before[0] for before, after in pairs]
    cpu_ratios = [after[1] / before[1] for before, after in pairs]
    for label, ratios in (("requests/s", rate_ratios), ("CPU per request", cpu_ratios)):
        rounds = " ".join(f"{ratio:.3f}" for ratio in ratios)
        print(f"after/before {label}: median {statistics.median(ratios):.3f} ({rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
