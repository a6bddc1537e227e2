"""A quick before/after check of a node's CPU per request, optionally profiled.

`python -m benchmarks.hotpath` starts the echo server and one node
(REPLICATION_FACTOR=1), fills 10,000 keys, and runs Put and Get at one
concurrency for a few seconds on each, alternating, several times; it prints
each case's ops/s and server CPU µs per call, and the node/echo ratios
(medians). Server CPU per call is the robust figure on a shared machine.
`--py-spy DIR` also samples the servers named by `--spy-servers` (default
the node) with py-spy (if installed) during the measured cases and writes
collapsed stacks there, one file per server, method and round, for `--top
FILE...` to summarise; `--env NAME=VALUE` passes a setting to the node.
Not part of the published benchmark (`benchmarks.run`).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.load import Case, Fill, LoadPlan, Step, Target, run_load
from benchmarks.servers import ServerSet

KEYS = 10_000


def _times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) / 100, int(fields[12]) / 100


def _measure(args: argparse.Namespace) -> None:
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="a3redis-hotpath-") as root_name,
        ServerSet(Path(root_name)) as servers,
    ):
        root = Path(root_name)
        echo = servers.start_echo()
        settings = {"FSYNC": args.fsync, **dict(item.split("=", 1) for item in args.env)}
        node = servers.start_node("node", root / "node", settings)
        targets = {"echo": Target(echo.target, echo.pid), "node": Target(node.target, node.pid)}
        first = True
        for round_index in range(args.rounds):
            for method in args.methods.split(","):
                order = ["echo", "node"] if round_index % 2 == 0 else ["node", "echo"]
                if args.node_only:
                    order = ["node"]
                for server in order:
                    spy = None
                    if args.py_spy is not None and server in args.spy_servers.split(","):
                        args.py_spy.mkdir(parents=True, exist_ok=True)
                        out = args.py_spy / f"{server}-{method}-{round_index}.txt"
                        spy = subprocess.Popen(
                            [
                                shutil.which("py-spy")
                                or str(Path(sys.executable).parent / "py-spy"),
                                "record",
                                "--nonblocking",
                                "-r",
                                str(args.rate),
                                "-f",
                                "raw",
                                "-o",
                                str(out),
                                "-p",
                                str(targets[server].pid),
                                "-d",
                                str(int(args.seconds + args.warmup + 1)),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    case = Case(method, args.concurrency, args.seconds, args.warmup, 10**9)
                    plan = LoadPlan(
                        servers={server: targets[server]},
                        steps=[Step(server, case)],
                        fills={"node": Fill(KEYS, 1)} if first and server == "node" else {},
                        get_key_space=KEYS,
                    )
                    if first and server == "node":
                        first = False
                    user, system = _times(targets[server].pid)
                    report = run_load(plan, 120)
                    user, system = (
                        a - b
                        for a, b in zip(_times(targets[server].pid), (user, system), strict=True)
                    )
                    if spy is not None:
                        spy.wait()
                    result = report.steps[0].result
                    results.setdefault((server, method), []).append(
                        (result.ops_per_s, result.server_cpu_us_per_op)
                    )
                    system_share = 100 * system / (user + system)
                    print(
                        f"{server:5} {method:4} c{args.concurrency}: {result.ops_per_s:7.0f} ops/s "
                        f"{result.server_cpu_us_per_op:6.0f} µs/op server cores "
                        f"{result.server_cores:.2f} other {result.other_cores:.2f} "
                        f"errors {result.errors} (whole step: {system_share:.0f}% system time)",
                        flush=True,
                    )
        shutil.rmtree(root / "node", ignore_errors=True)
    print()
    for method in args.methods.split(","):
        measured = results[("node", method)]
        ops = statistics.median(o for o, _ in measured)
        cpu = statistics.median(c for _, c in measured)
        line = f"node {method}: median {ops:.0f} ops/s, {cpu:.0f} µs/op"
        if ("echo", method) in results:
            reference = results[("echo", method)]
            e_ops = statistics.median(o for o, _ in reference)
            e_cpu = statistics.median(c for _, c in reference)
            line += (
                f"; echo {e_ops:.0f} ops/s, {e_cpu:.0f} µs/op; ratio ops {ops / e_ops:.2f}, "
                f"cpu echo/node {e_cpu / cpu:.2f}"
            )
        print(line)


def _top(paths: list[Path], count: int) -> None:
    """Self and inclusive sample shares per function from py-spy raw (collapsed) files."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, samples = line.rpartition(" ")
            n = int(samples)
            frames = stack.split(";")
            total += n
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    print(f"{total} samples")
    print("self:")
    for frame, n in own.most_common(count):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("inclusive:")
    for frame, n in inclusive.most_common(count):
        print(f"  {100 * n / total:5.1f}%  {frame}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--methods", default="put,get")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fsync", default="always")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the node")
    parser.add_argument("--node-only", action="store_true", help="do not measure the echo")
    parser.add_argument("--py-spy", type=Path, help="sample the node into this directory")
    parser.add_argument("--spy-servers", default="node", help="which servers to sample")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=Path, nargs="*", help="summarise py-spy raw files and exit")
    parser.add_argument("--count", type=int, default=40)
    args = parser.parse_args(argv)
    if args.top:
        _top(args.top, args.count)
        return 0
    _measure(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
