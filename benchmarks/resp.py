"""The Redis protocol's speed (issue #16): redis-benchmark against redis-server and nodes, same run.

Run: `python -m benchmarks.resp [--requests 200000] [--rounds 3] [--quick]` (also a part
of `python -m benchmarks.run`). It needs `redis-server` and `redis-benchmark` (Debian's
redis-server and redis-tools, listed in system-packages.toml).

Servers, each its own process on 127.0.0.1, started once and stopped at the end:
- redis-server with `--save '' --appendonly no` (the reference), and a second one with
  `--appendonly yes --appendfsync always` (the reference for durable SETs);
- the bare RESP server (`benchmarks.bare_resp`): the node's stack (trio, one reactor,
  the node's parser, group commit with fdatasync) and nothing of a database: the
  ceiling a node could reach here, for the yardstick ratios (not floors) after them;
- one node, REPLICATION_FACTOR=1, FSYNC=always, through its RESP port;
- a 3-node cluster (REPLICATION_FACTOR=3, QUORUM reads and writes, FSYNC=always),
  driven through node 1's RESP port only.

Each case is `redis-benchmark -c 50 -n REQUESTS -d 100 -r 100000 -t TEST [-P 16] --csv`,
for SET then GET (so GETs find the keys the SETs wrote), unpipelined and `-P 16`. A
round runs each case on every server that takes part, one after the other (redis-server
first, then the node, ...), and the rounds repeat the same order: redis-server, node,
redis-server, node, ... so each ratio compares runs made seconds apart. After each
round's unpipelined GET on the node, the node's gRPC Get at c64 runs
(`benchmarks.load`, grpc.aio, random keys among 10,000 BatchPut beforehand), for the
floor "RESP GET >= 5x gRPC Get".

Per case: requests/s, p50 and p99 as redis-benchmark reports them; the server's CPU
(all of the cluster's nodes together) per request and in cores; redis-benchmark's CPU;
and the CPU other processes used meanwhile. A case where others used more than
CONTENDED_CORES shared the machine: the table shows the median of the rounds that did
not (all rounds when every one did, marked), and a floor's ratio is the median of the
per-round ratios of the rounds where neither side was contended; when every round was,
the verdict says "unreliable".

`--py-spy DIR` samples the single node with py-spy during its RESP cases (one file per
case and round, summarised by `python -m benchmarks.hotpath --top DIR/*.txt`); the
sampler costs CPU of its own, so a profiled run's figures are not the benchmark's.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.load import Case, CaseResult, Fill, LoadPlan, Step, Target, run_load
from benchmarks.procfs import background_cores, cpu_seconds, machine_busy_seconds
from benchmarks.report import CONTENDED_CORES, Floor, floors_text, machine
from benchmarks.servers import HOST, ServerError, ServerProcess, ServerSet
from tests.support.processes import free_port

# The load issue #16 names.
REQUESTS = 200_000
CLIENTS = 50
VALUE_BYTES = 100
KEY_SPACE = 100_000
PIPELINE = 16
TESTS = ("set", "get")
# The gRPC reference: Get of 100-byte values at this concurrency, keys written beforehand.
GRPC_CONCURRENCY = 64
GRPC_KEYS = 10_000
GRPC_LABEL = "node gRPC Get c64"

REDIS = "redis-server"
REDIS_AOF = "redis-server appendfsync always"
BARE = "bare RESP server"
NODE = "node"
CLUSTER = "3-node cluster via node 1"
SERVER_ORDER = (REDIS, REDIS_AOF, BARE, NODE, CLUSTER, GRPC_LABEL)

NODE_SETTINGS = {"FSYNC": "always"}
CLUSTER_SETTINGS = {
    "REPLICATION_FACTOR": "3",
    "READ_CONSISTENCY": "quorum",
    "WRITE_CONSISTENCY": "quorum",
    "FSYNC": "always",
}
# A redis-benchmark run slower than this many requests per second is a broken server:
# its deadline is the time the requests take at this rate, plus slack.
SLOWEST_RATE = 300
READY_TIMEOUT_S = 30.0

# The floors of issue #16: (name, numerator, denominator, floor).
FLOORS = (
    ("unpipelined GET >= 0.30x redis-server", (NODE, "get", 1), (REDIS, "get", 1), 0.30),
    ("unpipelined SET >= 0.20x redis-server", (NODE, "set", 1), (REDIS, "set", 1), 0.20),
    (
        "unpipelined SET >= 0.5x redis-server appendfsync always",
        (NODE, "set", 1),
        (REDIS_AOF, "set", 1),
        0.5,
    ),
    ("-P 16 GET >= 0.10x redis-server -P 16", (NODE, "get", 16), (REDIS, "get", 16), 0.10),
    ("-P 16 SET >= 0.05x redis-server -P 16", (NODE, "set", 16), (REDIS, "set", 16), 0.05),
    (
        "RESP GET (c50) >= 5x the node's gRPC Get at c64",
        (NODE, "get", 1),
        (GRPC_LABEL, "get", GRPC_CONCURRENCY),
        5.0,
    ),
    ("3-node GET >= 0.35x the single node's", (CLUSTER, "get", 1), (NODE, "get", 1), 0.35),
    ("3-node SET >= 0.35x the single node's", (CLUSTER, "set", 1), (NODE, "set", 1), 0.35),
)


# Not floors: where the node stands against the ceiling of its own stack, and that
# ceiling against Redis. (name, numerator, denominator)
YARDSTICKS = (
    ("unpipelined SET, node / bare server", (NODE, "set", 1), (BARE, "set", 1)),
    ("unpipelined GET, node / bare server", (NODE, "get", 1), (BARE, "get", 1)),
    ("-P 16 SET, node / bare server", (NODE, "set", 16), (BARE, "set", 16)),
    ("-P 16 GET, node / bare server", (NODE, "get", 16), (BARE, "get", 16)),
    (
        "unpipelined SET, bare server / redis-server appendfsync always",
        (BARE, "set", 1),
        (REDIS_AOF, "set", 1),
    ),
    ("unpipelined GET, bare server / redis-server", (BARE, "get", 1), (REDIS, "get", 1)),
)


class BenchmarkError(RuntimeError):
    """redis-benchmark failed or printed no figures; the message has its output."""


# ----- redis-benchmark's output -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    """One test's line of redis-benchmark's output."""

    rps: float
    p50_ms: float
    p99_ms: float  # nan when the output had none (the `-q` form has no p99)


_QUIET_LINE = re.compile(
    r"(?P<test>[A-Z_]+[^:\r\n]*):\s*(?P<rps>[0-9.]+) requests per second"
    r"(?:, p50=(?P<p50>[0-9.]+) msec)?"
)


def parse_output(text: str) -> dict[str, Figures]:
    """Every test's figures by lower-case test name, from `--csv` or `-q` output.

    CSV columns are found by their header names, wherever the header line is (a
    warning may come first); lines that are not figures are skipped. Without any CSV
    row the `-q` form ("SET: 123.4 requests per second, p50=0.1 msec") is read; the
    progress lines it overwrites with a carriage return are skipped.
    """
    found: dict[str, Figures] = {}
    columns: dict[str, int] | None = None
    lines = [line for line in re.split(r"[\r\n]", text) if line.strip()]
    for line in lines:
        try:
            row = next(csv.reader([line]))
        except csv.Error:
            continue
        names = [cell.strip().lower() for cell in row]
        if "test" in names and "rps" in names:
            columns = {name: index for index, name in enumerate(names)}
            continue
        if columns is None or len(row) < len(columns):
            continue
        try:
            rps = float(row[columns["rps"]])
            p50 = float(row[columns["p50_latency_ms"]]) if "p50_latency_ms" in columns else math.nan
            p99 = float(row[columns["p99_latency_ms"]]) if "p99_latency_ms" in columns else math.nan
        except ValueError:
            continue
        found[row[columns["test"]].strip().lower()] = Figures(rps, p50, p99)
    if found:
        return found
    for line in lines:
        match = _QUIET_LINE.search(line)
        if match and "rps=" not in line:
            p50 = float(match["p50"]) if match["p50"] else math.nan
            found[match["test"].strip().lower()] = Figures(float(match["rps"]), p50, math.nan)
    return found


# ----- one measured case ---------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """One case on one server in one round."""

    server: str
    test: str  # "set" or "get"
    pipeline: int  # 1: unpipelined; for the gRPC reference, its concurrency
    round: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    wall_s: float
    server_cpu_s: float
    client_cpu_s: float
    machine_cpu_s: float
    # Each server process's share of server_cpu_s (a cluster's nodes, the one it is driven
    # through first): which one is the bottleneck.
    each_cpu_s: list[float] = field(default_factory=list)

    @property
    def server_cpu_us_per_op(self) -> float:
        return 1e6 * self.server_cpu_s / self.requests if self.requests else math.nan

    @property
    def server_cores(self) -> float:
        return self.server_cpu_s / self.wall_s

    @property
    def client_cores(self) -> float:
        return self.client_cpu_s / self.wall_s

    @property
    def other_cores(self) -> float:
        """CPU used by neither the server(s) nor the client, per second: other work."""
        other = self.machine_cpu_s - self.server_cpu_s - self.client_cpu_s
        return max(0.0, other) / self.wall_s

    @property
    def contended(self) -> bool:
        return self.other_cores > CONTENDED_CORES


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def redis_benchmark(
    server: str, port: int, pids: list[int], test: str, pipeline: int, requests: int, round_: int
) -> Run:
    """One `redis-benchmark -t test` against 127.0.0.1:port, with the CPU it and `pids` used."""
    command = [
        "redis-benchmark",
        *("-h", HOST, "-p", str(port)),
        *("-c", str(CLIENTS), "-n", str(requests), "-d", str(VALUE_BYTES)),
        *("-r", str(KEY_SPACE), "-t", test, "-P", str(pipeline), "--csv"),
    ]
    timeout = 30.0 + requests / SLOWEST_RATE
    server_before = [cpu_seconds(pid) for pid in pids]
    client_before, machine_before = _children_cpu_seconds(), machine_busy_seconds()
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as expired:
        raise BenchmarkError(
            f"{server}: {' '.join(command)} took over {timeout:.0f} s"
        ) from expired
    wall = time.perf_counter() - started
    each_cpu = [cpu_seconds(pid) - before for pid, before in zip(pids, server_before, strict=True)]
    client_cpu = _children_cpu_seconds() - client_before
    machine_cpu = machine_busy_seconds() - machine_before
    output = done.stdout + done.stderr
    figures = parse_output(done.stdout).get(test)
    # redis-benchmark exits at the first error reply, sometimes with status 0.
    if done.returncode != 0 or figures is None or "Error from server" in output:
        raise BenchmarkError(
            f"{server}: {' '.join(command)} exited {done.returncode}:\n{output[-2000:]}"
        )
    return Run(
        server,
        test,
        pipeline,
        round_,
        figures.rps,
        figures.p50_ms,
        figures.p99_ms,
        requests,
        wall,
        sum(each_cpu),
        client_cpu,
        machine_cpu,
        each_cpu,
    )


def grpc_get(node: ServerProcess, seconds: float, warmup: float, round_: int) -> Run:
    """The node's gRPC Get at c64 through the project's load generator (benchmarks.load)."""
    plan = LoadPlan(
        servers={GRPC_LABEL: Target(node.target, node.pid)},
        steps=[Step(GRPC_LABEL, Case("get", GRPC_CONCURRENCY, seconds, warmup, max_ops=10**9))],
        get_key_space=GRPC_KEYS,
    )
    result: CaseResult = run_load(plan, 60.0 + seconds + warmup).steps[0].result
    if result.errors or result.bad_responses or not result.ops:
        raise BenchmarkError(
            f"gRPC Get: {result.errors} errors, {result.bad_responses} bad answers "
            f"({result.first_error or 'no error text'})"
        )
    return Run(
        GRPC_LABEL,
        "get",
        GRPC_CONCURRENCY,
        round_,
        result.ops_per_s,
        result.p50_ms,
        result.p99_ms,
        result.ops,
        result.wall_s,
        result.server_cpu_s,
        result.client_cpu_s,
        result.machine_cpu_s,
    )


# ----- the servers ---------------------------------------------------------------------------


@dataclass(slots=True)
class Endpoint:
    """Where redis-benchmark connects, and the processes whose CPU is the server's."""

    port: int
    pids: list[int]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as probe:
            probe.sendall(b"PING\r\n")
            return probe.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis_server(stack: ExitStack, name: str, root: Path, persistence: list[str]) -> Endpoint:
    """redis-server on 127.0.0.1 with `persistence` options; killed when `stack` closes."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise ServerError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    directory = root / name
    directory.mkdir(parents=True)
    command = [
        executable,
        *("--port", str(port), "--bind", HOST, "--dir", str(directory)),
        *("--daemonize", "no", "--protected-mode", "no", "--logfile", ""),
        *persistence,
    ]
    return serve(stack, name, command, port, directory / "redis.log")


def start_bare(stack: ExitStack, root: Path) -> Endpoint:
    """The bare RESP server (benchmarks.bare_resp); killed when `stack` closes."""
    port = free_port()
    directory = root / "bare"
    directory.mkdir(parents=True)
    command = [sys.executable, "-m", "benchmarks.bare_resp", "--port", str(port)]
    command += ["--log", str(directory / "sets")]
    return serve(stack, "the bare RESP server", command, port, directory / "output.log")


def serve(
    stack: ExitStack,
    name: str,
    command: list[str],
    port: int,
    output: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Endpoint:
    """Start `command` (in `cwd`, with `env`), a server on `port`, and wait until it
    answers PING; killed when `stack` closes. Its output goes to `output`, whose end a
    failure to start shows."""
    log = open(output, "ab")  # noqa: SIM115 - closed by the stack
    stack.callback(log.close)
    process = subprocess.Popen(command, stdout=log, stderr=log, env=env, cwd=cwd)

    def stop() -> None:
        if process.poll() is None:
            process.kill()
            process.wait(10)

    stack.callback(stop)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _answers_ping(port):
        if process.poll() is not None or time.monotonic() > deadline:
            text = output.read_text(errors="replace")[-2000:]
            raise ServerError(f"{name} did not answer PING:\n{text}")
        time.sleep(0.05)
    return Endpoint(port, [process.pid])


def start_node(servers: ServerSet, root: Path) -> tuple[ServerProcess, Endpoint]:
    port = free_port()
    node = servers.start_node(
        "resp-node", root / "resp-node", {**NODE_SETTINGS, "RESP_PORT": str(port)}
    )
    return node, Endpoint(port, [node.pid])


def start_cluster(
    servers: ServerSet, root: Path, timeout: float = 60.0
) -> tuple[list[ServerProcess], Endpoint]:
    """Three nodes, each given the others as PEERS, once node 1 sees all three alive."""
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
    nodes = []
    for index, (grpc_port, http_port, resp_port) in enumerate(ports):
        peers = ",".join(f"{HOST}:{g}" for j, (g, _, _) in enumerate(ports) if j != index)
        settings = {
            **CLUSTER_SETTINGS,
            "NODE_NUM": str(index + 1),
            "PEERS": peers,
            "RESP_PORT": str(resp_port),
        }
        name = f"resp-cluster-{index + 1}"
        nodes.append(
            servers.start_node(
                name, root / name, settings, ports=(grpc_port, http_port), wait_timeout=None
            )
        )
    deadline = time.monotonic() + timeout
    for node in nodes:
        node.wait_healthy(max(0.1, deadline - time.monotonic()))
    url = f"http://{HOST}:{nodes[0].http_port}/membership"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                members = json.load(response).values()
            if sum(member["status"] == "alive" for member in members) == len(nodes):
                return nodes, Endpoint(ports[0][2], [node.pid for node in nodes])
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise ServerError(f"the 3 nodes did not all see each other within {timeout} s")


class Profiler:
    """py-spy sampling one process into DIR/<case>.txt, one case at a time (or nothing)."""

    def __init__(self, directory: Path | None, pid: int) -> None:
        self.directory = directory
        self.pid = pid
        self.program = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if directory is not None:
            if not Path(self.program).exists():
                raise SystemExit(f"--py-spy: no py-spy at {self.program} (pip install py-spy)")
            directory.mkdir(parents=True, exist_ok=True)

    def start(self, case: str) -> subprocess.Popen[bytes] | None:
        if self.directory is None:
            return None
        out = self.directory / f"{case}.txt"
        return subprocess.Popen(
            [
                *(self.program, "record", "--nonblocking", "-r", "250", "-f", "raw"),
                *("-o", str(out), "-p", str(self.pid)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @staticmethod
    def stop(spy: subprocess.Popen[bytes] | None) -> None:
        if spy is None:
            return
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(10)


# ----- the run --------------------------------------------------------------------------------


@dataclass(slots=True)
class Results:
    runs: list[Run] = field(default_factory=list)
    background: list[float] = field(default_factory=list)  # other work before each round
    seconds: float = 0.0


def _cases(args: argparse.Namespace) -> list[tuple[str, int, list[str]]]:
    """(test, pipeline, servers in the order they run); SET before GET so GETs find keys."""
    cases = []
    for pipeline in (1, PIPELINE):
        for test in TESTS:
            servers = [REDIS, BARE, NODE]
            if test == "set":
                servers.insert(1, REDIS_AOF)
            if not args.skip_cluster:
                servers.append(CLUSTER)
            cases.append((test, pipeline, servers))
    return cases


def _wait_for_quiet(limit_s: float) -> float:
    deadline = time.monotonic() + limit_s
    while True:
        load = background_cores(1.0)
        if load < CONTENDED_CORES or time.monotonic() >= deadline:
            return load
        print(f"waiting for a quiet machine: {load:.2f} cores busy", file=sys.stderr, flush=True)


def measure(args: argparse.Namespace) -> Results:
    results = Results()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="a3redis-resp-", dir=args.data_root) as root_name,
        ServerSet(Path(root_name)) as servers,
        ExitStack() as stack,
    ):
        root = Path(root_name)
        endpoints = {
            REDIS: start_redis_server(stack, "redis", root, ["--save", "", "--appendonly", "no"]),
            REDIS_AOF: start_redis_server(
                stack,
                "redis-aof",
                root,
                ["--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            ),
            BARE: start_bare(stack, root),
        }
        node, endpoints[NODE] = start_node(servers, root)
        nodes = [node]
        if not args.skip_cluster:
            cluster, endpoints[CLUSTER] = start_cluster(servers, root)
            nodes += cluster
        # The gRPC Get reads keys the gRPC way writes them; redis-benchmark's are its own.
        run_load(
            LoadPlan(
                servers={GRPC_LABEL: Target(node.target, node.pid)},
                fills={GRPC_LABEL: Fill(GRPC_KEYS, round_number=1)},
            ),
            120.0,
        )
        profiler = Profiler(args.py_spy, node.pid)
        for round_index in range(1, args.rounds + 1):
            results.background.append(_wait_for_quiet(args.wait_quiet))
            print(f"round {round_index} of {args.rounds}", file=sys.stderr, flush=True)
            for test, pipeline, names in _cases(args):
                for name in names:
                    endpoint = endpoints[name]
                    spy = (
                        profiler.start(f"{test}-P{pipeline}-{round_index}")
                        if name == NODE
                        else None
                    )
                    try:
                        run = redis_benchmark(
                            name,
                            endpoint.port,
                            endpoint.pids,
                            test,
                            pipeline,
                            args.requests,
                            round_index,
                        )
                    finally:
                        Profiler.stop(spy)
                    results.runs.append(run)
                    print(f"  {_run_line(run)}", file=sys.stderr, flush=True)
                    if name == NODE and test == "get" and pipeline == 1:
                        grpc = grpc_get(node, args.grpc_seconds, args.grpc_warmup, round_index)
                        results.runs.append(grpc)
                        print(f"  {_run_line(grpc)}", file=sys.stderr, flush=True)
        # Stopped politely, so a node that failed on the way says so; the set kills the rest.
        for process in nodes:
            process.stop()
    results.seconds = time.monotonic() - started
    return results


# ----- the report ---------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _key(run: Run) -> tuple[str, str, int]:
    return run.server, run.test, run.pipeline


def _cores(run: Run) -> str:
    """Server cores, and each process's when there are several (node 1 first)."""
    text = f"{run.server_cores:.2f}"
    if len(run.each_cpu_s) > 1:
        text += " (" + " + ".join(f"{cpu / run.wall_s:.2f}" for cpu in run.each_cpu_s) + ")"
    return text


def _run_line(run: Run) -> str:
    shape = f"c{run.pipeline}" if run.server == GRPC_LABEL else f"P{run.pipeline}"
    return (
        f"{run.server} {run.test.upper()} {shape}: {run.rps:,.0f}/s p50 {run.p50_ms:.3f} "
        f"p99 {run.p99_ms:.3f} ms; server {run.server_cpu_us_per_op:.1f} µs/op "
        f"{_cores(run)} cores; other {run.other_cores:.2f}"
    )


@dataclass(frozen=True, slots=True)
class Row:
    """A table line: the median of the uncontended rounds (all of them if none was)."""

    run: Run
    rounds: list[Run]
    counted: int  # rounds the median is over
    all_contended: bool

    @property
    def spread(self) -> float:
        rates = [r.rps for r in self.rounds]
        return (max(rates) - min(rates)) / self.run.rps if self.run.rps else math.nan


def rows(runs: list[Run]) -> list[Row]:
    grouped: dict[tuple[str, str, int], list[Run]] = {}
    for run in runs:
        grouped.setdefault(_key(run), []).append(run)
    table = []
    for rounds in grouped.values():
        quiet = [r for r in rounds if not r.contended]
        counted = sorted(quiet or rounds, key=lambda r: r.rps)
        table.append(Row(counted[(len(counted) - 1) // 2], rounds, len(counted), not quiet))
    order = {name: index for index, name in enumerate(SERVER_ORDER)}
    return sorted(table, key=lambda row: (row.run.pipeline, row.run.test, order[row.run.server]))


@dataclass(frozen=True, slots=True)
class Ratio:
    """One server's requests/s over another's: the median of the per-round ratios."""

    value: float | None  # None: not measured
    detail: str
    reliable: bool  # False: every round behind it shared the CPUs with other work


def ratio(
    runs: list[Run], numerator: tuple[str, str, int], denominator: tuple[str, str, int]
) -> Ratio:
    """The median of per-round ratios over the rounds neither side shared."""
    by_round = {(_key(run), run.round): run for run in runs}
    pairs = [
        (by_round[(numerator, r)], by_round[(denominator, r)])
        for r in sorted({run.round for run in runs})
        if (numerator, r) in by_round and (denominator, r) in by_round
    ]
    if not pairs:
        return Ratio(None, "not measured", True)
    quiet = [(a, b) for a, b in pairs if not (a.contended or b.contended)]
    counted = quiet or pairs
    ratios = [a.rps / b.rps for a, b in counted]
    cpu = _median([b.server_cpu_us_per_op / a.server_cpu_us_per_op for a, b in counted])
    left_out = len(pairs) - len(quiet) if quiet else 0
    detail = (
        f"ratio {_median(ratios):.3f}; per round "
        + ", ".join(f"{a.rps / b.rps:.3f}" for a, b in pairs)
        + (f" ({left_out} contended left out)" if left_out else "")
        + f"; {_median([a.rps for a, _ in counted]):,.0f} vs "
        f"{_median([b.rps for _, b in counted]):,.0f}/s; "
        f"server CPU per request, theirs/ours {cpu:.2f}"
    )
    return Ratio(_median(ratios), detail, bool(quiet))


def floors(runs: list[Run]) -> list[Floor]:
    judged = []
    for name, numerator, denominator, floor in FLOORS:
        measured = ratio(runs, numerator, denominator)
        judged.append(
            Floor(name, measured.value, floor, True, "x", measured.detail, measured.reliable)
        )
    return judged


def yardsticks(runs: list[Run]) -> list[tuple[str, Ratio]]:
    return [(name, ratio(runs, a, b)) for name, a, b in YARDSTICKS]


def yardsticks_text(runs: list[Run]) -> str:
    return "\n".join(
        f"[yardstick] {name}: {measured.detail}"
        + ("" if measured.reliable else " (contended: unreliable)")
        for name, measured in yardsticks(runs)
    )


def table(table_rows: list[Row]) -> str:
    header = (
        "| server | test | pipeline | req/s | spread | p50 ms | p99 ms | server CPU µs/req "
        "| server cores | client cores | other cores |"
    )
    lines = [header, "|" + "---|" * 11]
    for row in table_rows:
        run = row.run
        shape = f"c{run.pipeline}" if run.server == GRPC_LABEL else f"-P {run.pipeline}"
        rate = f"{run.rps:,.0f}" + (" (contended)" if row.all_contended else "")
        lines.append(
            f"| {run.server} | {run.test.upper()} | {shape} | {rate} | {100 * row.spread:.0f}% "
            f"| {run.p50_ms:.3f} | {run.p99_ms:.3f} | {run.server_cpu_us_per_op:.1f} "
            f"| {_cores(run)} | {run.client_cores:.2f} | {run.other_cores:.2f} |"
        )
    return "\n".join(lines)


def report(args: argparse.Namespace, results: Results) -> str:
    info = machine()
    contended = [run for run in results.runs if run.contended]
    parts = [
        f"a3redis RESP benchmark: {info['cpu_model']}, {info['cpus']} CPUs, "
        f"Python {info['python']}; redis-benchmark -c {CLIENTS} -n {args.requests} "
        f"-d {VALUE_BYTES} -r {KEY_SPACE}; {args.rounds} round(s); took {results.seconds:.0f} s; "
        "other processes' CPU use before each round (cores): "
        + ", ".join(f"{load:.2f}" for load in results.background),
        "",
        table(rows(results.runs)),
        "",
        floors_text(floors(results.runs)),
        yardsticks_text(results.runs),
    ]
    if contended:
        parts.append(
            f"note: in {len(contended)} of {len(results.runs)} cases other processes used more "
            f"than {CONTENDED_CORES} cores (up to {max(r.other_cores for r in contended):.2f}); "
            "those rounds are left out of the medians and ratios where any round was not"
        )
    if args.py_spy is not None:
        parts.append(f"note: py-spy sampled the node ({args.py_spy}): figures include its cost")
    return "\n".join(parts)


def _none_for_nan(value: Any) -> Any:
    """JSON has no NaN: a figure that was not reported becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _none_for_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_none_for_nan(item) for item in value]
    return value


def to_json(args: argparse.Namespace, results: Results) -> dict[str, Any]:
    document = {
        "settings": {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items()
        },
        "background_cores_before_each_round": results.background,
        "runs": [
            {
                **asdict(run),
                "server_cpu_us_per_op": run.server_cpu_us_per_op,
                "other_cores": run.other_cores,
            }
            for run in results.runs
        ],
        "floors": [
            {
                "name": floor.name,
                "measured": floor.measured,
                "floor": floor.floor,
                "verdict": floor.verdict,
                "detail": floor.detail,
            }
            for floor in floors(results.runs)
        ],
        "yardsticks": [
            {"name": name, "ratio": measured.value, "detail": measured.detail}
            for name, measured in yardsticks(results.runs)
        ],
    }
    return _none_for_nan(document)  # type: ignore[no-any-return]


# ----- the command line -----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    parser.add_argument(
        "--requests", type=int, help=f"redis-benchmark -n per case (default {REQUESTS:,})"
    )
    parser.add_argument("--rounds", type=int, help="repeat every case this often (default 3)")
    parser.add_argument(
        "--grpc-seconds", type=float, help="measured seconds of the gRPC Get (default 5)"
    )
    parser.add_argument("--skip-cluster", action="store_true", help="leave out the 3 nodes")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each round, wait up to this long for other processes to leave the CPUs idle",
    )
    parser.add_argument("--py-spy", type=Path, metavar="DIR", help="profile the node into DIR")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--data-root", type=Path, help="where temporary DATA_DIRs go (default: system temp)"
    )


def settle(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    if args.requests is None:
        args.requests = 20_000 if args.quick else REQUESTS
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.grpc_seconds is None:
        args.grpc_seconds = 1.0 if args.quick else 5.0
    args.grpc_warmup = 0.2 if args.quick else 0.5
    if args.requests < CLIENTS or args.rounds < 1 or args.grpc_seconds <= 0:
        parser.error(f"--requests must be at least {CLIENTS}, --rounds and --grpc-seconds positive")
    return args


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.resp",
        description="redis-benchmark against redis-server and a3redis nodes, same run.",
    )
    add_arguments(parser)
    return settle(parser.parse_args(argv), parser)


def missing_tools() -> list[str]:
    return [tool for tool in ("redis-server", "redis-benchmark") if shutil.which(tool) is None]


def run(args: argparse.Namespace) -> int:
    missing = missing_tools()
    if missing:
        print(
            f"RESP benchmark not run: {', '.join(missing)} missing "
            "(apt-get install redis-server redis-tools)"
        )
        return 1
    results = measure(args)
    print("\n" + report(args, results))
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(args, results), indent=1))
        print(f"\nJSON written to {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
