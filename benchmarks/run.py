"""The benchmark entry point: `python -m benchmarks.run [--quick] [--json PATH]`.

It starts each server in its own process (the echo reference, a node with
FSYNC=always, a node with FSYNC=no) and drives them all from one separate
load-generator process per round. Within a round each case runs on every
server back to back (alternating which goes first), so a node-to-echo ratio
compares measurements taken seconds apart. Each round gets fresh nodes; the
table shows the median round, the floors the median of per-round ratios.
Then the restart case runs on its own node, and then the Redis-protocol part
(`benchmarks.resp`: redis-benchmark against redis-server and nodes). It prints
the tables and the floors and, when asked, writes every figure as JSON. Every server and
temporary directory it creates is gone when it returns, whatever happened.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from a3redis.v1 import kv_pb2 as pb
from benchmarks import report, resp
from benchmarks.load import Case, CaseResult, Fill, LoadPlan, Step, Target, plan_timeout, run_load
from benchmarks.procfs import background_cores
from benchmarks.report import ECHO, ECHO_STOCK, NODE_ALWAYS, NODE_NO, Measured
from benchmarks.restart import RestartResult, measure_restart
from benchmarks.servers import ServerSet

# Keys the Get cases read at random; written by BatchPut before the cases run.
GET_KEY_SPACE = 10_000
# Below this much CPU used by other processes, the machine counts as quiet.
QUIET_CORES = 0.2


def _concurrencies(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers, e.g. 1,16,64")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark a3redis against real node processes and an echo reference.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of under a minute")
    parser.add_argument("--duration", type=float, help="measured seconds per case (default 2)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each case (0.5)")
    parser.add_argument("--rounds", type=int, help="repeat every case this often; median (3)")
    parser.add_argument(
        "--max-ops", type=int, default=500_000, help="a case also stops after this many calls"
    )
    parser.add_argument(
        "--concurrency", type=_concurrencies, default=[1, 16, 64], help="for Put and Get"
    )
    parser.add_argument(
        "--batch-concurrency", type=_concurrencies, default=[1, 8], help="for BatchPut"
    )
    parser.add_argument("--restart-keys", type=int, help="keys in the restart case (1,000,000)")
    parser.add_argument("--skip-restart", action="store_true", help="leave out the restart case")
    parser.add_argument(
        "--skip-requests", action="store_true", help="leave out the Put/Get/BatchPut cases"
    )
    parser.add_argument(
        "--skip-resp", action="store_true", help="leave out the Redis-protocol part (resp.py)"
    )
    parser.add_argument(
        "--consistency",
        choices=[name.removeprefix("CONSISTENCY_").lower() for name, _ in pb.Consistency.items()],
        default="default",
        help="the level every Put/Get/BatchPut asks for (local skips the coordinator)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each round, wait up to this long for other processes to leave the CPUs idle",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--data-root", type=Path, help="where temporary DATA_DIRs go (default: system temp)"
    )
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 0.5 if args.quick else 2.0
    if args.warmup is None:
        args.warmup = 0.2 if args.quick else 0.5
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.restart_keys is None:
        args.restart_keys = 20_000 if args.quick else 1_000_000
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0 or args.restart_keys < 1:
        parser.error("--rounds, --duration and --restart-keys must be positive")
    return args


def _round_steps(args: argparse.Namespace, round_index: int) -> list[Step]:
    """Every case on every server that runs it, the servers back to back."""
    top, batch_top = max(args.concurrency), max(args.batch_concurrency)
    cases = [
        *(("put", c) for c in args.concurrency),
        *(("get", c) for c in args.concurrency),
        *(("batch_put", c) for c in args.batch_concurrency),
    ]
    steps: list[Step] = []
    for method, concurrency in cases:
        servers = [ECHO, NODE_ALWAYS]
        if method != "batch_put":
            servers.insert(0, ECHO_STOCK)
        if (method, concurrency) in (("put", top), ("batch_put", batch_top)):
            servers.append(NODE_NO)
        # Alternate who goes first, so neither side always runs on a warmer machine.
        if round_index % 2:
            servers.reverse()
        case = Case(method, concurrency, args.duration, args.warmup, args.max_ops)
        steps += [Step(server, case) for server in servers]
    # Health/Check at the top concurrency: as cheap as a call can be, against both echoes.
    servers = [ECHO_STOCK, ECHO, NODE_ALWAYS]
    if round_index % 2:
        servers.reverse()
    case = Case("health", top, args.duration, args.warmup, args.max_ops)
    steps += [Step(server, case) for server in servers]
    return steps


def _median_rounds(steps: list[tuple[str, CaseResult]]) -> list[Measured]:
    """One Measured per (server, method, concurrency), in first-seen order."""
    grouped: dict[tuple[str, str, int], list[CaseResult]] = {}
    for server, result in steps:
        grouped.setdefault((server, result.method, result.concurrency), []).append(result)
    measured = []
    for (server, _, _), rounds in grouped.items():
        ordered = sorted(rounds, key=lambda r: r.ops_per_s)
        measured.append(Measured(server, ordered[(len(ordered) - 1) // 2], rounds))
    order = {ECHO_STOCK: 0, ECHO: 1, NODE_ALWAYS: 2, NODE_NO: 3}
    return sorted(measured, key=lambda m: order[m.server])


def _wait_for_quiet(limit_s: float) -> float:
    """Background CPU load (in cores) once below QUIET_CORES, or when time runs out."""
    deadline = time.monotonic() + limit_s
    while True:
        load = background_cores(1.0)
        if load < QUIET_CORES or time.monotonic() >= deadline:
            return load
        print(f"waiting for a quiet machine: {load:.2f} cores busy", file=sys.stderr, flush=True)


def _measure_requests(
    servers: ServerSet, root: Path, args: argparse.Namespace, background: list[float]
) -> list[Measured]:
    """Run every round; append the background load found before each to `background`."""
    echo = servers.start_echo()
    echo_stock = servers.start_echo(stock=True)
    results: list[tuple[str, CaseResult]] = []
    for round_index in range(args.rounds):
        background.append(_wait_for_quiet(args.wait_quiet))
        # Fresh nodes every round: each round starts from the same state instead of
        # a table grown by the previous rounds' writes.
        running = {ECHO: echo, ECHO_STOCK: echo_stock}
        for label, fsync in ((NODE_ALWAYS, "always"), (NODE_NO, "no")):
            name = f"node-fsync-{fsync}-round-{round_index + 1}"
            running[label] = servers.start_node(name, root / name, {"FSYNC": fsync})
        plan = LoadPlan(
            servers={label: Target(s.target, s.pid) for label, s in running.items()},
            steps=_round_steps(args, round_index),
            # The echo server answers every Get with a 100-byte value; the node needs keys.
            fills={NODE_ALWAYS: Fill(GET_KEY_SPACE, round_number=1)},
            get_key_space=GET_KEY_SPACE,
            consistency=pb.Consistency.Value(f"CONSISTENCY_{args.consistency.upper()}"),
        )
        print(
            f"round {round_index + 1} of {args.rounds}: {len(plan.steps)} steps, about "
            f"{len(plan.steps) * (args.duration + args.warmup):.0f} s",
            file=sys.stderr,
            flush=True,
        )
        load = run_load(plan, plan_timeout(plan))
        results += [(step.server, step.result) for step in load.steps]
        for label in (NODE_ALWAYS, NODE_NO):
            running[label].stop()
            shutil.rmtree(root / running[label].name)
    echo.stop()
    echo_stock.stop()
    return _median_rounds(results)


def run(args: argparse.Namespace) -> int:
    restart: RestartResult | None = None
    background: list[float] = []  # other processes' CPU use (cores) before each part
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="a3redis-bench-", dir=args.data_root) as root_name,
        ServerSet(Path(root_name)) as servers,
    ):
        root = Path(root_name)
        measured = [] if args.skip_requests else _measure_requests(servers, root, args, background)
        if not args.skip_restart:
            background.append(_wait_for_quiet(args.wait_quiet))
            print(f"restart case with {args.restart_keys:,} keys", file=sys.stderr, flush=True)
            restart = measure_restart(servers, root / "data-restart", args.restart_keys)

    resp_results: resp.Results | None = None
    resp_args = _resp_args(args)
    if not args.skip_resp and not resp.missing_tools():
        resp_results = resp.measure(resp_args)

    judged = report.floors(measured, max(args.concurrency), max(args.batch_concurrency), restart)
    info = report.machine()
    print(
        f"\na3redis benchmark: {info['cpu_model']}, {info['cpus']} CPUs, Python {info['python']}; "
        f"consistency {args.consistency}; median of {args.rounds} round(s) of "
        f"{args.duration:g} s per case after {args.warmup:g} s warm-up; 100-byte values; "
        f"took {time.monotonic() - started:.0f} s; "
        "other processes' CPU use before each part (cores): "
        + ", ".join(f"{load:.2f}" for load in background)
        + "\n"
    )
    print(report.cases_table(measured))
    if restart is not None:
        print()
        print(report.restart_table(restart))
    print()
    print(report.floors_text(judged))
    contended = report.contention_note(measured)
    if contended:
        print(contended)
    if not args.skip_resp:
        print()
        if resp_results is None:
            print(f"RESP part not run: {', '.join(resp.missing_tools())} missing")
        else:
            print(resp.report(resp_args, resp_results))
    if args.json is not None:
        settings: dict[str, Any] = {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items()
        }
        settings["background_cores_before_each_part"] = background
        figures = json.loads(report.to_json(settings, measured, restart, judged))
        if resp_results is not None:
            figures["resp"] = resp.to_json(resp_args, resp_results)
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"\nJSON written to {args.json}")
    return 0


def _resp_args(args: argparse.Namespace) -> argparse.Namespace:
    """The RESP part's settings: its own defaults, with this run's --quick, --wait-quiet
    and --data-root."""
    forwarded = ["--wait-quiet", str(args.wait_quiet)]
    if args.quick:
        forwarded.append("--quick")
    if args.data_root is not None:
        forwarded += ["--data-root", str(args.data_root)]
    return resp.parse_args(forwarded)


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
