"""The load generator: a separate process driving the servers under test with grpc.aio.

`python -m benchmarks.load` reads a LoadPlan as JSON on stdin, optionally
fills servers with keys (BatchPut), runs each Step (one Case on one server:
a fixed concurrency of workers calling one method, bounded by both an op
count and a time), and writes a LoadReport as JSON on stdout. It reads the
server's CPU time from /proc around each measured window itself, so the
window is exactly the one its latencies come from. `run_load` is the
harness side: it runs this module as a subprocess with a deadline.

grpc.aio is used rather than purerpc's client because it needs about half
the CPU per call, leaving more of the machine to the server under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import grpc
import grpc.aio

from a3redis.v1 import kv_pb2 as pb
from benchmarks.procfs import cpu_seconds, machine_busy_seconds

SERVICE = "/a3redis.v1.KeyValue/"
# The gRPC Health service's Check: the cheapest call a node serves (no storage, no peers).
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
METHODS = ("put", "get", "batch_put", "health")
# A HealthCheckRequest for "" (the node as a whole) is empty on the wire; the answer
# SERVING is field 1 = 1.
_HEALTH_REQUEST = b""
_SERVING = b"\x08\x01"
# Workers stop a case early after this many failed calls: a broken server
# must not turn a benchmark into a tight error loop.
MAX_ERRORS = 100
# Channel options: never route 127.0.0.1 traffic through an HTTP proxy from the environment.
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


def fill_key(index: int) -> bytes:
    return b"key-%08d" % index


def fill_value(round_number: int, index: int, value_bytes: int = 100) -> bytes:
    """A value that tells which fill round wrote it, so a stale read is visible."""
    return (b"r%d-%08d-" % (round_number, index)).ljust(value_bytes, b"x")[:value_bytes]


@dataclass(frozen=True, slots=True)
class Case:
    method: str  # one of METHODS
    concurrency: int
    duration_s: float
    warmup_s: float
    max_ops: int
    value_bytes: int = 100
    batch_keys: int = 100


@dataclass(frozen=True, slots=True)
class Fill:
    """BatchPut fill_key(0..count-1) with fill_value(round_number, i); with `ttl_ms`,
    every `ttl_every`-th key (i % ttl_every == 0) expires that long after its write."""

    count: int
    round_number: int
    batch_keys: int = 1000
    concurrency: int = 4
    ttl_ms: int = 0
    ttl_every: int = 1


@dataclass(frozen=True, slots=True)
class Target:
    """A server under test: where to call it and which process to read CPU time from."""

    address: str
    pid: int


@dataclass(frozen=True, slots=True)
class Step:
    """Run `case` against the server named `server` in the plan."""

    server: str
    case: Case


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """Fills first, then steps in order; each server gets one channel for the whole plan."""

    servers: dict[str, Target]
    steps: list[Step] = field(default_factory=list)
    fills: dict[str, Fill] = field(default_factory=dict)
    # Get cases read random keys among fill_key(0..get_key_space-1).
    get_key_space: int = 0
    call_timeout_s: float = 10.0
    # The Consistency enum number every case request carries (0: the server's default).
    consistency: int = 0

    @classmethod
    def from_json(cls, text: str) -> LoadPlan:
        raw = json.loads(text)
        return cls(
            servers={name: Target(**target) for name, target in raw["servers"].items()},
            steps=[Step(step["server"], Case(**step["case"])) for step in raw["steps"]],
            fills={name: Fill(**fill) for name, fill in raw["fills"].items()},
            get_key_space=raw["get_key_space"],
            call_timeout_s=raw["call_timeout_s"],
            consistency=raw["consistency"],
        )


@dataclass(slots=True)
class CaseResult:
    method: str
    concurrency: int
    ops: int
    keys: int
    wall_s: float
    ops_per_s: float
    keys_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    bad_responses: int
    first_error: str
    server_cpu_s: float
    client_cpu_s: float
    # Every CPU's busy time over the window: what is left after server and client
    # is other work on the machine competing with the benchmark.
    machine_cpu_s: float

    @property
    def server_cpu_us_per_op(self) -> float:
        return 1e6 * self.server_cpu_s / self.ops if self.ops else float("nan")

    @property
    def server_cores(self) -> float:
        """Server CPU as a fraction of one core over the window (1.0: one core busy)."""
        return self.server_cpu_s / self.wall_s if self.wall_s else float("nan")

    @property
    def client_cores(self) -> float:
        return self.client_cpu_s / self.wall_s if self.wall_s else float("nan")

    @property
    def other_cores(self) -> float:
        """CPU used by neither server nor client (other processes, the kernel) per second."""
        other = self.machine_cpu_s - self.server_cpu_s - self.client_cpu_s
        return max(0.0, other) / self.wall_s if self.wall_s else float("nan")


@dataclass(slots=True)
class FillResult:
    keys: int
    wall_s: float
    keys_per_s: float
    server_cpu_s: float
    client_cpu_s: float


@dataclass(slots=True)
class StepResult:
    server: str
    result: CaseResult


@dataclass(slots=True)
class LoadReport:
    steps: list[StepResult]
    fills: dict[str, FillResult]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadReport:
        raw = json.loads(text)
        return cls(
            [StepResult(step["server"], CaseResult(**step["result"])) for step in raw["steps"]],
            {name: FillResult(**fill) for name, fill in raw["fills"].items()},
        )


def run_load(plan: LoadPlan, timeout_s: float) -> LoadReport:
    """Run the load generator in its own process; kill it if it overruns `timeout_s`."""
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.load"],
        input=json.dumps(asdict(plan)),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"load generator failed (exit {completed.returncode}):\n{completed.stderr}"
        )
    return LoadReport.from_json(completed.stdout)


def plan_timeout(plan: LoadPlan, fill_keys_per_s: float = 2_000.0) -> float:
    """A deadline for the whole plan: every step's time plus generous slack."""
    steps = sum(s.case.warmup_s + s.case.duration_s + plan.call_timeout_s for s in plan.steps)
    fills = sum(fill.count for fill in plan.fills.values()) / fill_keys_per_s
    return 30.0 + steps + fills


# ----- the load generator process ---------------------------------------------------------


@dataclass(slots=True)
class _Window:
    """What the workers of one case share: the phase flags and the measurements."""

    max_ops: int
    measuring: bool = False
    done: bool = False
    latencies_ns: list[int] = field(default_factory=list)
    errors: int = 0  # failed calls inside the measured window
    failed_calls: int = 0  # failed calls at any time, for the runaway guard
    bad_responses: int = 0
    first_error: str = ""
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    def record_error(self, error: grpc.aio.AioRpcError) -> None:
        self.failed_calls += 1
        if self.measuring:
            self.errors += 1
        if not self.first_error:
            self.first_error = f"{error.code().name}: {error.details()}"
        if self.failed_calls >= MAX_ERRORS:
            self.enough.set()


Call = Callable[..., Any]
Request = Any
Check = Callable[[Any], bool]


class _Driver:
    """Calls one server over one channel."""

    def __init__(self, channel: grpc.aio.Channel, target: Target, plan: LoadPlan) -> None:
        self.pid = target.pid
        self.get_key_space = plan.get_key_space
        self.call_timeout_s = plan.call_timeout_s
        self.consistency = plan.consistency
        self.calls: dict[str, Call] = {
            "put": channel.unary_unary(
                SERVICE + "Put",
                request_serializer=pb.PutRequest.SerializeToString,
                response_deserializer=pb.PutResponse.FromString,
            ),
            "get": channel.unary_unary(
                SERVICE + "Get",
                request_serializer=pb.GetRequest.SerializeToString,
                response_deserializer=pb.GetResponse.FromString,
            ),
            "batch_put": channel.unary_unary(
                SERVICE + "BatchPut",
                request_serializer=pb.BatchPutRequest.SerializeToString,
                response_deserializer=pb.BatchPutResponse.FromString,
            ),
            # Bytes as they are: no health stub is loaded in the load generator.
            "health": channel.unary_unary(
                HEALTH_CHECK,
                request_serializer=bytes,
                response_deserializer=bytes,
            ),
        }

    async def fill(self, fill: Fill) -> FillResult:
        call = self.calls["batch_put"]
        starts = iter(range(0, fill.count, fill.batch_keys))

        async def worker() -> None:
            for start in starts:
                indexes = range(start, min(start + fill.batch_keys, fill.count))
                request = pb.BatchPutRequest(
                    pairs=[
                        pb.KeyValuePair(key=fill_key(i), value=fill_value(fill.round_number, i))
                        for i in indexes
                    ]
                )
                if fill.ttl_ms:
                    for i, pair in zip(indexes, request.pairs, strict=True):
                        if i % fill.ttl_every == 0:
                            pair.ttl_ms = fill.ttl_ms
                # A fill call may wait behind a log compaction; allow it time.
                response = await call(request, timeout=max(60.0, self.call_timeout_s))
                if len(response.versions) != len(indexes):
                    raise RuntimeError(f"BatchPut stored {len(response.versions)} keys")

        server_before, client_before = cpu_seconds(self.pid), cpu_seconds()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(fill.concurrency)))
        wall = time.perf_counter() - started
        return FillResult(
            keys=fill.count,
            wall_s=wall,
            keys_per_s=fill.count / wall,
            server_cpu_s=cpu_seconds(self.pid) - server_before,
            client_cpu_s=cpu_seconds() - client_before,
        )

    def _requests(self, case: Case, case_index: int) -> tuple[Callable[[int, int], Request], Check]:
        """How a worker makes its n-th request, and how a response is checked."""
        value = b"p" * case.value_bytes
        consistency = cast(pb.Consistency, self.consistency)
        if case.method == "put":

            def put(worker: int, n: int) -> Request:
                key = b"put-%d-%d-%d" % (case_index, worker, n)
                return pb.PutRequest(key=key, value=value, consistency=consistency)

            return put, lambda response: response.HasField("version")
        if case.method == "get":
            if self.get_key_space <= 0:
                raise ValueError("a get case needs get_key_space > 0 (fill the server first)")
            pick = random.Random(case_index).randrange
            space = self.get_key_space

            def get(worker: int, n: int) -> Request:
                return pb.GetRequest(key=fill_key(pick(space)), consistency=consistency)

            value_bytes = case.value_bytes
            return get, lambda response: response.found and len(response.value) == value_bytes
        if case.method == "batch_put":

            def batch_put(worker: int, n: int) -> Request:
                prefix = b"batch-%d-%d-%d-" % (case_index, worker, n)
                return pb.BatchPutRequest(
                    pairs=[
                        pb.KeyValuePair(key=prefix + b"%d" % i, value=value)
                        for i in range(case.batch_keys)
                    ],
                    consistency=consistency,
                )

            batch_keys = case.batch_keys
            return batch_put, lambda response: len(response.versions) == batch_keys
        if case.method == "health":
            return (lambda worker, n: _HEALTH_REQUEST), lambda response: response == _SERVING
        raise ValueError(f"unknown method {case.method!r}; expected one of {METHODS}")

    async def run_case(self, case: Case, case_index: int) -> CaseResult:
        call = self.calls[case.method]
        make_request, check = self._requests(case, case_index)
        window = _Window(case.max_ops)
        timeout = self.call_timeout_s

        async def worker(worker_id: int) -> None:
            n = 0
            while not window.done:
                request = make_request(worker_id, n)
                n += 1
                started = time.perf_counter_ns()
                try:
                    response = await call(request, timeout=timeout)
                except grpc.aio.AioRpcError as error:
                    window.record_error(error)
                    continue
                elapsed = time.perf_counter_ns() - started
                if window.measuring:
                    if not check(response):
                        window.bad_responses += 1
                    window.latencies_ns.append(elapsed)
                    if len(window.latencies_ns) >= window.max_ops:
                        window.enough.set()

        workers = [asyncio.create_task(worker(w)) for w in range(case.concurrency)]
        try:
            await asyncio.sleep(case.warmup_s)
            server_before, client_before = cpu_seconds(self.pid), cpu_seconds()
            machine_before = machine_busy_seconds()
            started = time.perf_counter()
            window.measuring = True
            # Whichever comes first: max_ops calls (the event) or the duration.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(window.enough.wait(), case.duration_s)
            window.measuring = False
            wall = time.perf_counter() - started
            server_cpu = cpu_seconds(self.pid) - server_before
            client_cpu = cpu_seconds() - client_before
            machine_cpu = machine_busy_seconds() - machine_before
        finally:
            window.done = True
            # Each worker ends after its call in flight, which has a deadline.
            await asyncio.gather(*workers, return_exceptions=True)
        latencies = sorted(window.latencies_ns)
        ops = len(latencies)
        keys = ops * (case.batch_keys if case.method == "batch_put" else 1)
        return CaseResult(
            method=case.method,
            concurrency=case.concurrency,
            ops=ops,
            keys=keys,
            wall_s=wall,
            ops_per_s=ops / wall,
            keys_per_s=keys / wall,
            p50_ms=_percentile_ms(latencies, 0.50),
            p99_ms=_percentile_ms(latencies, 0.99),
            max_ms=latencies[-1] / 1e6 if latencies else float("nan"),
            errors=window.errors,
            bad_responses=window.bad_responses,
            first_error=window.first_error,
            server_cpu_s=server_cpu,
            client_cpu_s=client_cpu,
            machine_cpu_s=machine_cpu,
        )


def _percentile_ms(sorted_ns: list[int], fraction: float) -> float:
    """Nearest-rank percentile of sorted nanosecond samples, in milliseconds."""
    if not sorted_ns:
        return float("nan")
    rank = max(0, min(len(sorted_ns) - 1, round(fraction * len(sorted_ns)) - 1))
    return sorted_ns[rank] / 1e6


async def _generate(plan: LoadPlan) -> LoadReport:
    async with contextlib.AsyncExitStack() as stack:
        drivers: dict[str, _Driver] = {}
        for name, target in plan.servers.items():
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(target.address, options=CHANNEL_OPTIONS)
            )
            await asyncio.wait_for(channel.channel_ready(), 10.0)
            drivers[name] = _Driver(channel, target, plan)
        fills = {name: await drivers[name].fill(fill) for name, fill in plan.fills.items()}
        steps = [
            StepResult(step.server, await drivers[step.server].run_case(step.case, index))
            for index, step in enumerate(plan.steps)
        ]
    return LoadReport(steps, fills)


def main() -> int:
    plan = LoadPlan.from_json(sys.stdin.read())
    try:
        report = asyncio.run(_generate(plan))
    except grpc.aio.AioRpcError as error:
        # A failed fill or connection: say what the server answered, not a traceback.
        print(f"load generator: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    sys.stdout.write(report.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
