"""Joins (issue #15): how fast a joining node streams its partitions, and what that costs clients.

Run: `python -m benchmarks.scaling [--rounds 3] [--idle-keys 1000000] [--load-keys 300000]`.
Every round starts fresh real processes (`python -m a3redis.node`, FSYNC=always,
REPLICATION_FACTOR=3, every other setting at its default unless `--env` says
otherwise) on 127.0.0.1 and removes them and their data at the end.

- Idle join, for each of `--idle-keys`: three nodes are filled with that
  many keys of 100-byte values (BatchPut of `--fill-batch` keys at QUORUM,
  spread over the three; the fill time is reported), each runs one
  anti-entropy round (which builds the Merkle index a source pages through,
  as any node that has run for SYNC_INTERVAL has; `--cold-index` skips it),
  then node-4 starts with the three as PEERS and joins. The harness polls node-4's `GET
  /api/transition` every POLL seconds and reports:
  - streaming: keys_streamed (and bytes_streamed, keys plus values) over the
    time node-4 spends in the `joining` role after its drain (from the first
    poll that shows it joining with nothing to wait for to the first that
    shows it `joined`), in keys/s and MB/s; also the same keys over the time
    they were moving (first poll with a key to first poll with the last), and
    the CPU node-4 and the three sources used meanwhile;
  - end to end: from starting node-4's process until it is `normal` and
    every node's ring has settled (no transition in its /api/transition), with
    the phases (to joining, the drain, streaming, joined to settled).
- Join under load (`--load-keys`): the same cluster and fill, then a load
  process (grpc.aio, `--load` mode of this module) keeps `--clients` Puts
  and as many Gets (QUORUM, Gets of filled keys, Puts of new keys) in flight,
  spread over the three original nodes, and records when each call ended.
  Its throughput in the `--rest-seconds` before node-4 starts (the cluster at
  rest) is compared with its throughput in node-4's streaming window: the
  same load, on the same cluster, in the same run.

Each figure is reported per round and as the median of the rounds, with a
verdict on the floors of issue #15. Each round also says how much CPU other
processes on the machine took in its windows (and which ones); a round where
that exceeds CONTENDED cores is left out of the medians when any round is
not, and the medians are marked unreliable when every round is.

`--profile DIR` samples node-4 and node-1 (a source) with py-spy (`--py-spy
PATH`) during idle and loaded joins and writes collapsed stacks to DIR, which `python -m
benchmarks.hotpath --top FILE...` summarises. `python -m benchmarks.scaling
--stages [KEYS]` times, in process, each step a streamed record takes on the
source and on the joiner (µs per record, with and without the cyclic garbage
collector): what the CPU of a join goes to, without the noise of processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.procfs import background_cores, cpu_seconds, machine_busy_seconds
from benchmarks.servers import HOST, ServerError, ServerProcess, ServerSet

T = TypeVar("T")

VALUE_BYTES = 100
POLL = 0.05
CLUSTER_SETTINGS = {"REPLICATION_FACTOR": "3", "FSYNC": "always"}
JOIN_TIMEOUT_S = 600.0
READY_TIMEOUT_S = 60.0
# The load process stops by itself after this long, whatever the harness does.
LOAD_MAX_SECONDS = 900.0
WARMUP_S = 1.0
# A window where other processes used more than this many cores is contended: on a
# machine of two cores the benchmark's own processes lost a share of them.
CONTENDED = 0.3
FILL_ATTEMPTS = 5

# The floors of issue #15.
STREAM_FLOOR_KEYS_PER_S = 50_000
LOAD_RATIO_FLOOR = 0.7
JOIN_FLOOR_S = 60.0
JOIN_FLOOR_KEYS = 1_000_000


def fill_key(index: int) -> bytes:
    return b"key-%08d" % index


def fill_value(index: int) -> bytes:
    return (b"%08d-" % index).ljust(VALUE_BYTES, b"v")


# ----- the load process ---------------------------------------------------------------------


def _stubs(endpoints: list[str]) -> tuple[list[Any], dict[str, list[Any]]]:
    import grpc.aio

    from a3redis.v1 import kv_pb2 as pb

    channels = [
        grpc.aio.insecure_channel(e, options=[("grpc.enable_http_proxy", 0)]) for e in endpoints
    ]
    methods: dict[str, tuple[str, Any, Any]] = {
        "put": ("Put", pb.PutRequest, pb.PutResponse),
        "get": ("Get", pb.GetRequest, pb.GetResponse),
        "batch_put": ("BatchPut", pb.BatchPutRequest, pb.BatchPutResponse),
    }
    calls = {
        name: [
            channel.unary_unary(
                f"/a3redis.v1.KeyValue/{method}",
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )
            for channel in channels
        ]
        for name, (method, request, response) in methods.items()
    }
    return channels, calls


async def _fill(endpoints: list[str], keys: int, batch: int, concurrency: int) -> dict[str, Any]:
    """BatchPut fill_key(0..keys-1) at QUORUM, batches spread over the endpoints."""
    import grpc
    import grpc.aio

    from a3redis.v1 import kv_pb2 as pb

    retried = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    retries: list[int] = []

    channels, calls = _stubs(endpoints)
    starts = iter(range(0, keys, batch))
    started = time.monotonic()

    async def worker(worker_id: int) -> None:
        call = calls["batch_put"][worker_id % len(endpoints)]
        for start in starts:
            indexes = range(start, min(start + batch, keys))
            request = pb.BatchPutRequest(
                pairs=[pb.KeyValuePair(key=fill_key(i), value=fill_value(i)) for i in indexes],
                consistency=pb.CONSISTENCY_QUORUM,
            )
            # A batch the coordinator could not finish within REQUEST_TIMEOUT (behind a
            # compaction, or a slow fsync) is written again: the same keys and values.
            for attempt in range(FILL_ATTEMPTS):
                try:
                    response = await call(request, timeout=120)
                    break
                except grpc.aio.AioRpcError as error:
                    if attempt + 1 == FILL_ATTEMPTS or error.code() not in retried:
                        raise
                    retries.append(start)
            if len(response.versions) != len(indexes):
                raise RuntimeError(f"BatchPut stored {len(response.versions)} keys")

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    seconds = time.monotonic() - started
    for channel in channels:
        await channel.close()
    return {"keys": keys, "seconds": seconds, "retries": len(retries)}


async def _mix(endpoints: list[str], clients: int, key_space: int) -> dict[str, Any]:
    """`clients` Puts and `clients` Gets in flight at QUORUM until a line (or EOF) on stdin.

    Returns, per method, each call's end (time.monotonic, the harness's clock too)
    and latency, and the failed calls' ends.
    """
    import grpc.aio

    from a3redis.v1 import kv_pb2 as pb

    channels, calls = _stubs(endpoints)
    done = asyncio.Event()
    ended: dict[str, list[float]] = {"put": [], "get": []}
    latency: dict[str, list[float]] = {"put": [], "get": []}
    failed: dict[str, list[float]] = {"put": [], "get": []}
    first_error: list[str] = []
    value = b"p" * VALUE_BYTES

    async def worker(method: str, worker_id: int) -> None:
        pick = random.Random(worker_id).randrange
        n = 0
        while not done.is_set():
            n += 1
            call = calls[method][(worker_id + n) % len(endpoints)]
            if method == "put":
                request: Any = pb.PutRequest(
                    key=b"load-%d-%d" % (worker_id, n),
                    value=value,
                    consistency=pb.CONSISTENCY_QUORUM,
                )
            else:
                request = pb.GetRequest(
                    key=fill_key(pick(key_space)), consistency=pb.CONSISTENCY_QUORUM
                )
            started = time.monotonic()
            try:
                await call(request, timeout=10)
            except grpc.aio.AioRpcError as error:
                failed[method].append(time.monotonic())
                if not first_error:
                    first_error.append(f"{method}: {error.code().name}: {error.details()}")
                if len(failed[method]) > 10_000:
                    done.set()
                await asyncio.sleep(0.01)
                continue
            now = time.monotonic()
            ended[method].append(now)
            latency[method].append(now - started)

    async def stop_when_told() -> None:
        loop = asyncio.get_running_loop()
        # A daemon thread: a harness that never writes cannot keep this process alive.
        line: asyncio.Future[str] = loop.create_future()

        def told(text: str) -> None:
            if not line.done():
                line.set_result(text)

        def read() -> None:
            loop.call_soon_threadsafe(told, sys.stdin.readline())

        threading.Thread(target=read, daemon=True).start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(line, LOAD_MAX_SECONDS)
        done.set()

    workers = [
        asyncio.create_task(worker(method, i)) for i in range(clients) for method in ("put", "get")
    ]
    await stop_when_told()
    await asyncio.gather(*workers, return_exceptions=True)
    for channel in channels:
        await channel.close()
    return {
        "ended": ended,
        "latency": latency,
        "failed": failed,
        "first_error": first_error[0] if first_error else "",
    }


def _load_main(argv: list[str]) -> None:
    mode, endpoints = argv[0], argv[1].split(",")
    if mode == "--fill":
        keys, batch, concurrency = (int(a) for a in argv[2:5])
        result = asyncio.run(_fill(endpoints, keys, batch, concurrency))
    else:
        clients, key_space = int(argv[2]), int(argv[3])
        result = asyncio.run(_mix(endpoints, clients, key_space))
    print(json.dumps(result))


def fill(nodes: list[ServerProcess], keys: int, batch: int, concurrency: int) -> float:
    """Fill the nodes with `keys` keys; the seconds it took."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.scaling",
            "--fill",
            ",".join(node.target for node in nodes),
            str(keys),
            str(batch),
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        timeout=60 + keys / 2_000,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"fill failed:\n{completed.stderr[-4000:]}")
    result = json.loads(completed.stdout)
    if result["retries"]:
        print(f"(fill: {result['retries']} batches written again after a timeout)", file=sys.stderr)
    seconds: float = result["seconds"]
    return seconds


class MixedLoad:
    """The load process of a join under load: started, then told to stop."""

    def __init__(self, nodes: list[ServerProcess], clients: int, key_space: int) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.scaling",
                "--load",
                ",".join(node.target for node in nodes),
                str(clients),
                str(key_space),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def stop(self) -> dict[str, Any]:
        try:
            out, err = self.process.communicate("stop\n", timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise RuntimeError("the load process did not stop") from None
        if self.process.returncode != 0:
            raise RuntimeError(f"load process failed:\n{err[-4000:]}")
        result: dict[str, Any] = json.loads(out)
        return result

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def window_rate(ended: list[float], start: float, end: float) -> float:
    """Calls per second that ended within [start, end)."""
    if end <= start:
        return float("nan")
    return sum(start <= t < end for t in ended) / (end - start)


def window_latency_ms(
    ended: list[float], latency: list[float], start: float, end: float, quantile: float
) -> float:
    inside = sorted(lat for t, lat in zip(ended, latency, strict=True) if start <= t < end)
    if not inside:
        return float("nan")
    return 1000 * inside[min(len(inside) - 1, int(quantile * len(inside)))]


# ----- watching a join ----------------------------------------------------------------------


def every_process_cpu() -> dict[int, float]:
    """CPU seconds so far of every process still running (for naming other work)."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                found[int(entry.name)] = cpu_seconds(entry.name)
    return found


def command_of(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"pid {pid} (gone)"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:80] or f"pid {pid}"


def get_json(node: ServerProcess, path: str, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(
            f"http://{HOST}:{node.http_port}{path}", timeout=timeout
        ) as response:
            body: dict[str, Any] = json.load(response)
            return body
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_normal(nodes: list[ServerProcess], timeout: float) -> None:
    """Until every node is ready, `normal` and sees no transition."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [get_json(node, "/api/transition") for node in nodes]
        ready = [get_json(node, "/ready") for node in nodes]
        if all(
            state is not None
            and state["role"] == "normal"
            and state["ring"]["reads_from"] is None
            and body is not None
            and body.get("ready")
            for state, body in zip(states, ready, strict=True)
        ):
            return
        time.sleep(0.2)
    raise ServerError(f"the cluster did not settle within {timeout}s")


@dataclass
class Usage:
    """The CPU time used so far, read at a poll that may bound the streaming window."""

    cpu: list[float]  # CPU seconds so far of node-4, each original node, then others watched
    machine: float  # every CPU's busy seconds so far (procfs.machine_busy_seconds)
    everyone: dict[int, float]  # CPU seconds so far of every process on the machine


@dataclass
class Poll:
    at: float  # time.monotonic()
    role: str
    waiting: str | None
    keys: int
    bytes: int
    # Read only where the window may start or end (`Join.record`): reading every
    # process's CPU takes the harness milliseconds, and inside the window that is CPU
    # the cluster and its clients lose to the measurement alone.
    usage: Usage | None


@dataclass
class Join:
    """What one join looked like from outside, with every figure derived from the polls."""

    keys_held: int
    launched: float
    polls: list[Poll] = field(default_factory=list)
    settled: float = float("nan")
    # The processes outside the benchmark busiest while node-4 streamed: (command, cores).
    others: list[tuple[str, float]] = field(default_factory=list)

    def record(
        self,
        at: float,
        state: dict[str, Any],
        read_usage: Callable[[], Usage],
    ) -> Poll:
        """Add a poll of node-4's /api/transition `state`, reading the CPU time used so far
        (`read_usage`) unless the poll lies strictly inside the streaming window: joining
        with nothing to wait for, right after a poll that saw the same. Neither
        `stream_start` nor `stream_end` can be such a poll."""
        role, waiting = state["role"], state["waiting_for"]
        previous = self.polls[-1] if self.polls else None
        inside = (
            previous is not None
            and previous.role == role == "joining"
            and not previous.waiting
            and not waiting
        )
        poll = Poll(
            at,
            role,
            waiting,
            state["keys_streamed"],
            state["bytes_streamed"],
            None if inside else read_usage(),
        )
        self.polls.append(poll)
        return poll

    def _first(self, test: Any) -> Poll:
        return next(p for p in self.polls if test(p))

    @property
    def joining(self) -> Poll:
        return self._first(lambda p: p.role == "joining")

    @property
    def stream_start(self) -> Poll:
        """The first poll in `joining` after the drain: nothing to wait for any more.

        Right after announcing `joining` a node reports nothing to wait for too (for
        a tick, before it sees the acknowledgements missing), so this is the poll
        after the last one in `joining` that waited for something.
        """
        joining = [p for p in self.polls if p.role == "joining"]
        waited = [i for i, p in enumerate(joining) if p.waiting]
        return joining[min(waited[-1] + 1, len(joining) - 1)] if waited else joining[0]

    @property
    def stream_end(self) -> Poll:
        return self._first(lambda p: p.role in ("joined", "normal"))

    @property
    def first_key(self) -> Poll:
        return self._first(lambda p: p.keys > 0)

    @property
    def last_key(self) -> Poll:
        return self._first(lambda p: p.keys == self.keys)

    @property
    def keys(self) -> int:
        return self.polls[-1].keys

    @property
    def bytes(self) -> int:
        return self.polls[-1].bytes

    @property
    def stream_seconds(self) -> float:
        return self.stream_end.at - self.stream_start.at

    @property
    def moving_seconds(self) -> float:
        if self.keys == 0:
            return 0.0  # a join with nothing to copy (`--idle-keys 0`)
        return self.last_key.at - self.first_key.at

    @property
    def keys_per_s(self) -> float:
        return self.keys / self.stream_seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.stream_seconds / 1e6

    @property
    def end_to_end(self) -> float:
        return self.settled - self.launched

    def _window_usage(self) -> tuple[Usage, Usage, float]:
        """The CPU time read at the start and at the end of the streaming window, and
        its length in seconds."""
        start, end = self.stream_start, self.stream_end
        if start.usage is None or end.usage is None:
            raise RuntimeError("a poll bounding the streaming window read no CPU time")
        return start.usage, end.usage, end.at - start.at

    def stream_cores(self) -> list[float]:
        """CPU cores used by node-4 and by each original node over the streaming window."""
        start, end, seconds = self._window_usage()
        return [(b - a) / seconds for a, b in zip(start.cpu, end.cpu, strict=True)]

    def machine_cores(self) -> float:
        """CPU cores the whole machine used over the streaming window (of 2 here)."""
        start, end, seconds = self._window_usage()
        return (end.machine - start.machine) / seconds

    def other_cores(self) -> float:
        """CPU cores used over the streaming window by none of the processes watched."""
        return max(0.0, self.machine_cores() - sum(self.stream_cores()))

    def busiest_others(self, watched: set[int], count: int = 2) -> list[tuple[str, float]]:
        """The processes not watched that used the most CPU over the streaming window:
        (command line, cores)."""
        start, end, window = self._window_usage()
        used = [
            (cpu - start.everyone.get(pid, 0.0), pid)
            for pid, cpu in end.everyone.items()
            if pid not in watched
        ]
        used.sort(reverse=True)
        return [(command_of(pid), seconds / window) for seconds, pid in used[:count] if seconds > 0]

    def summary(self) -> dict[str, Any]:
        return {
            "keys_held": self.keys_held,
            "keys_streamed": self.keys,
            "bytes_streamed": self.bytes,
            "stream_s": self.stream_seconds,
            "keys_per_s": self.keys_per_s,
            "mb_per_s": self.mb_per_s,
            "moving_s": self.moving_seconds,
            "moving_keys_per_s": self.keys / self.moving_seconds if self.moving_seconds else 0,
            "to_joining_s": self.joining.at - self.launched,
            "drain_s": self.stream_start.at - self.joining.at,
            "joined_to_settled_s": self.settled - self.stream_end.at,
            "end_to_end_s": self.end_to_end,
            "stream_cores": self.stream_cores(),
            "machine_cores": self.machine_cores(),
            "other_cores": self.other_cores(),
            "others": self.others,
        }


def watch_join(
    joiner: ServerProcess,
    nodes: list[ServerProcess],
    join: Join,
    timeout: float,
    other_pids: tuple[int, ...] = (),
) -> None:
    """Poll node-4 until it is normal and every node's ring has settled; each poll that
    may bound the streaming window also reads the CPU time of node-4, of `nodes` and
    of `other_pids` (in that order), and of every process on the machine."""
    deadline = time.monotonic() + timeout
    pids = [joiner.pid, *(node.pid for node in nodes), *other_pids]
    while time.monotonic() < deadline:
        if not joiner.running():
            raise ServerError(f"{joiner.name} exited:\n{joiner.output()}")
        state = get_json(joiner, "/api/transition")
        now = time.monotonic()
        if state is not None:
            join.record(
                now,
                state,
                lambda: Usage(
                    [cpu_seconds(pid) for pid in pids], machine_busy_seconds(), every_process_cpu()
                ),
            )
            if state["role"] == "normal" and state["ring"]["reads_from"] is None:
                others = [get_json(node, "/api/transition") for node in nodes]
                if all(o is not None and o["ring"]["reads_from"] is None for o in others):
                    join.settled = time.monotonic()
                    join.others = join.busiest_others({os.getpid(), *pids})
                    return
        time.sleep(max(0.0, POLL - (time.monotonic() - now)))
    raise ServerError(f"node-4 did not join within {timeout}s")


# ----- one round ----------------------------------------------------------------------------


@dataclass
class Options:
    fill_batch: int
    fill_concurrency: int
    clients: int
    rest_seconds: float
    settings: dict[str, str]
    py_spy: str | None
    profile: Path | None
    cold_index: bool


def _cluster(servers: ServerSet, options: Options) -> list[ServerProcess]:
    nodes = servers.start_cluster("node-", 3, {**CLUSTER_SETTINGS, **options.settings})
    wait_normal(nodes, READY_TIMEOUT_S)
    return nodes


def repair_round(nodes: list[ServerProcess]) -> float:
    """One anti-entropy round from each node, waited for; the seconds they took.

    A node builds the Merkle index that lists a partition's keys (what Stream
    pages through) for its first round; a cluster that has run for SYNC_INTERVAL
    has done so. Without this a join right after the fill also waits for each
    source to build it (`--cold-index`).
    """
    import grpc

    from a3redis.v1 import kv_pb2 as pb

    started = time.monotonic()
    for node in nodes:
        with grpc.insecure_channel(node.target, options=[("grpc.enable_http_proxy", 0)]) as channel:
            repair = channel.unary_unary(
                "/a3redis.v1.KeyValue/Repair",
                request_serializer=pb.RepairRequest.SerializeToString,
                response_deserializer=pb.RepairResponse.FromString,
            )
            repair(pb.RepairRequest(wait=True), timeout=300)
    return time.monotonic() - started


def _start_joiner(
    servers: ServerSet, base: Path, nodes: list[ServerProcess], options: Options
) -> ServerProcess:
    settings = {
        **CLUSTER_SETTINGS,
        **options.settings,
        "NODE_NUM": "4",
        "PEERS": ",".join(node.target for node in nodes),
    }
    return servers.start_node("node-4", base / "node-4-data", settings, wait_timeout=None)


def _spies(
    options: Options, nodes: Sequence[ServerProcess], label: str
) -> list[subprocess.Popen[bytes]]:
    """py-spy on each of `nodes` into `--profile`'s directory (none without it)."""
    if options.profile is None or options.py_spy is None:
        return []
    command = [options.py_spy, "record", "--nonblocking", "-r", "250", "-f", "raw"]
    options.profile.mkdir(parents=True, exist_ok=True)
    out = options.profile
    return [
        subprocess.Popen(
            [*command, "-o", str(out / f"{label}-{node.name}.txt"), "-p", str(node.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for node in nodes
    ]


def _stop_spies(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C, not on SIGTERM
        spy.wait(30)


def _kill_spies(spies: list[subprocess.Popen[bytes]]) -> None:
    """Those still running (the join failed before `_stop_spies`)."""
    for spy in spies:
        if spy.poll() is None:
            spy.kill()
            spy.wait(10)


def idle_join(keys: int, options: Options, label: str) -> tuple[float, Join]:
    """Fill a 3-node cluster with `keys` keys and join node-4; (fill seconds, the join)."""
    base = Path(tempfile.mkdtemp(prefix="a3r-scaling-"))
    spies: list[subprocess.Popen[bytes]] = []
    try:
        with ServerSet(base) as servers:
            nodes = _cluster(servers, options)
            fill_s = fill(nodes, keys, options.fill_batch, options.fill_concurrency)
            if not options.cold_index:
                print(f"(a repair round on each node: {repair_round(nodes):.1f}s)", file=sys.stderr)
            launched = time.monotonic()
            joiner = _start_joiner(servers, base, nodes, options)
            join = Join(keys, launched)
            spies = _spies(options, (joiner, nodes[0]), label)
            watch_join(joiner, nodes, join, JOIN_TIMEOUT_S)
            _stop_spies(spies)
            for node in (*nodes, joiner):
                node.stop(30)
            return fill_s, join
    finally:
        _kill_spies(spies)
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class LoadedJoin:
    join: Join
    rest: dict[str, float]
    during: dict[str, float]
    errors: dict[str, int]
    first_error: str
    # CPU cores used at rest and while streaming: node-4 (0 at rest), the three
    # original nodes together, the load process, the whole machine.
    rest_cores: dict[str, float]
    during_cores: dict[str, float]

    def ratio(self, method: str) -> float:
        return self.during[method] / self.rest[method]

    def other_cores(self) -> float:
        """The most CPU other work took in either window."""
        rest = self.rest_cores
        at_rest = rest["machine"] - rest["nodes"] - rest["load"]
        return max(at_rest, self.join.other_cores())


def loaded_join(keys: int, options: Options) -> tuple[float, LoadedJoin]:
    """Fill, run the load at rest, then join node-4 under the same load."""
    base = Path(tempfile.mkdtemp(prefix="a3r-scaling-"))
    load: MixedLoad | None = None
    spies: list[subprocess.Popen[bytes]] = []
    try:
        with ServerSet(base) as servers:
            nodes = _cluster(servers, options)
            fill_s = fill(nodes, keys, options.fill_batch, options.fill_concurrency)
            if not options.cold_index:
                print(f"(a repair round on each node: {repair_round(nodes):.1f}s)", file=sys.stderr)
            load = MixedLoad(nodes, options.clients, keys)
            watched = [node.pid for node in nodes] + [load.process.pid]
            time.sleep(WARMUP_S)
            rest_start = time.monotonic(), [cpu_seconds(p) for p in watched], machine_busy_seconds()
            time.sleep(options.rest_seconds)
            rest_end = time.monotonic(), [cpu_seconds(p) for p in watched], machine_busy_seconds()
            launched = time.monotonic()
            joiner = _start_joiner(servers, base, nodes, options)
            join = Join(keys, launched)
            spies = _spies(options, (joiner, nodes[0]), "loaded")
            watch_join(joiner, nodes, join, JOIN_TIMEOUT_S, (load.process.pid,))
            _stop_spies(spies)
            result = load.stop()
            load = None
            for node in (*nodes, joiner):
                node.stop(30)
    finally:
        _kill_spies(spies)
        if load is not None:
            load.kill()
        shutil.rmtree(base, ignore_errors=True)
    rest_window = (rest_start[0], rest_end[0])
    stream_window = (join.stream_start.at, join.stream_end.at)
    rest_s = rest_end[0] - rest_start[0]
    rest_used = [(b - a) / rest_s for a, b in zip(rest_start[1], rest_end[1], strict=True)]
    during_used = join.stream_cores()
    rest_cores = {
        "node-4": 0.0,
        "nodes": sum(rest_used[:3]),
        "load": rest_used[3],
        "machine": (rest_end[2] - rest_start[2]) / rest_s,
    }
    during_cores = {
        "node-4": during_used[0],
        "nodes": sum(during_used[1:4]),
        "load": during_used[4],
        "machine": join.machine_cores(),
    }
    rest: dict[str, float] = {}
    during: dict[str, float] = {}
    errors: dict[str, int] = {}
    for method in ("put", "get"):
        ended, latency = result["ended"][method], result["latency"][method]
        rest[method] = window_rate(ended, *rest_window)
        during[method] = window_rate(ended, *stream_window)
        for name, window in (("rest", rest_window), ("during", stream_window)):
            for quantile, tag in ((0.5, "p50"), (0.99, "p99")):
                key = f"{method}_{name}_{tag}_ms"
                (rest if name == "rest" else during)[key] = window_latency_ms(
                    ended, latency, *window, quantile
                )
        errors[method] = len(result["failed"][method])
    for figures in (rest, during):
        figures["both"] = figures["put"] + figures["get"]
    return fill_s, LoadedJoin(
        join, rest, during, errors, result["first_error"], rest_cores, during_cores
    )


# ----- the stages of a page, in process ------------------------------------------------------


LIST = "source: list a partition's keys (MerkleIndex)"
READ = "source: read and pack the records (Store.packed)"
ANSWER = "source: answer_stream, the rest"


class _Timer:
    """Seconds spent per stage, accumulated; `wrap` times a callable's calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - started
        return now

    def wrap(self, stage: str, function: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def timed(argument: Any) -> Any:
            started = time.perf_counter()
            result = function(argument)
            self.add(stage, started)
            return result

        return timed


def stages(keys: int, rounds: int, collect_garbage: bool) -> dict[str, float]:
    """µs per record of each step a streamed record takes, source then joiner, in process.

    The steps of Rebalancer._pull and ReplicaService.Stream without the event loop,
    the gRPC stack and the fsync: a source's table of `keys` records with its Merkle
    index answers pages (STREAM_PAGE records, STREAM_PARTITIONS partitions per
    request) that a joiner decodes, checks and applies to its own table (which has no
    Merkle index while it joins: it builds one once it serves);
    the best of `rounds` rounds per step, each round into an empty joiner table.
    With `collect_garbage` the collector runs with the node's thresholds
    (a3redis.node.GC_THRESHOLDS), as it does in a joining node.
    """
    import gc

    from a3redis.api import wire
    from a3redis.cluster.rebalance import STREAM_PAGE, STREAM_PARTITIONS
    from a3redis.core.hlc import HybridLogicalClock, Version
    from a3redis.core.merkle import MerkleIndex
    from a3redis.core.record import Record
    from a3redis.core.ring import DEFAULT_PARTITIONS
    from a3redis.core.streaming import (
        StreamRequest,
        answer_stream_packed,
        check_page,
        next_request,
    )
    from a3redis.core.table import RecordTable
    from a3redis.core.validation import MAX_PEER_RESPONSE_BYTES, Limits
    from a3redis.node import GC_THRESHOLDS
    from a3redis.storage import codec
    from a3redis.v1 import replica_pb2 as rpb

    chunks = 16  # CHUNK_COUNT's default
    wall = int(time.time() * 1000)
    records = [
        Record(fill_key(i), fill_value(i), Version(wall - 60_000, 0, "node-1")) for i in range(keys)
    ]
    source = RecordTable(records)
    index = MerkleIndex(DEFAULT_PARTITIONS, chunks)
    for record in records:
        index.update(None, record)
    source.index = index
    limits = Limits()
    bound = limits.clock_bound(wall)

    def read_packed(wanted: Any) -> list[bytes | None]:
        # Keyspace.read_local_packed's work: the table's entries, packed within the bound.
        return codec.pack_entries(wanted, source.entries_of(wanted), bound)

    best: dict[str, float] = {}
    for _ in range(rounds):
        timer = _Timer()
        keys_of = timer.wrap(LIST, index.partition_keys)
        read = timer.wrap(READ, read_packed)
        joiner = RecordTable()
        clock = HybridLogicalClock("node-4")
        gc.collect()
        thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        if not collect_garbage:
            gc.disable()
        started_all = time.perf_counter()
        for start in range(0, DEFAULT_PARTITIONS, STREAM_PARTITIONS):
            partitions = tuple(range(start, start + STREAM_PARTITIONS))
            request: StreamRequest | None = StreamRequest(
                partitions, b"", STREAM_PAGE, DEFAULT_PARTITIONS
            )
            while request is not None:
                t = time.perf_counter()
                page = answer_stream_packed(request, keys_of, read, MAX_PEER_RESPONSE_BYTES)
                t = timer.add(ANSWER, t)
                data = wire.stream_packed_to_pb(page).SerializeToString()
                t = timer.add("source: to the message and serialize (wire)", t)
                received = wire.stream_page_from_pb(
                    rpb.StreamResponse.FromString(data), request.page_size
                )
                t = timer.add("joiner: parse and to Records (wire)", t)
                check_page(request, received, limits, wall)
                t = timer.add("joiner: check_page", t)
                if received.records:
                    clock.observe(max(record.version for record in received.records), wall)
                t = timer.add("joiner: the clock passes the page's greatest version", t)
                assert received.payloads is not None
                codec.frame_all(received.payloads, 0, 0)
                t = timer.add("joiner: frame the payloads for the log (codec)", t)
                joiner.apply_all(received.records)
                t = timer.add("joiner: table (RecordTable.apply_all)", t)
                request = next_request(request, received)
        timer.add("total", started_all)
        gc.enable()
        gc.set_threshold(*thresholds)
        # answer_stream's time includes the two it calls, timed on their own.
        timer.seconds[ANSWER] -= timer.seconds[LIST] + timer.seconds[READ]
        for stage, seconds in timer.seconds.items():
            best[stage] = min(best.get(stage, float("inf")), 1e6 * seconds / keys)
    return best


def print_stages(keys: int, rounds: int) -> None:
    with_gc = stages(keys, rounds, True)
    without_gc = stages(keys, rounds, False)
    print(f"µs per streamed record, {keys:,} keys, best of {rounds} (collector on / off):")
    for stage, micros in with_gc.items():
        print(f"  {stage:<55} {micros:6.2f} / {without_gc[stage]:6.2f}")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _cores(cores: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in cores.items())


def _join_line(fill_s: float, join: Join) -> str:
    s = join.summary()
    cores = ", ".join(f"{c:.2f}" for c in s["stream_cores"])
    whose = "node-4, node-1..3" + (", load" if len(s["stream_cores"]) > 4 else "")
    return (
        f"  fill {join.keys_held:,} keys {fill_s:.1f}s ({join.keys_held / fill_s:,.0f}/s); "
        f"streamed {s['keys_streamed']:,} keys {s['bytes_streamed'] / 1e6:.1f} MB in "
        f"{s['stream_s']:.2f}s: {s['keys_per_s']:,.0f} keys/s {s['mb_per_s']:.2f} MB/s "
        f"(keys moving {s['moving_s']:.2f}s: {s['moving_keys_per_s']:,.0f}/s); "
        f"end to end {s['end_to_end_s']:.1f}s = to joining {s['to_joining_s']:.1f} "
        f"+ drain {s['drain_s']:.1f} + stream {s['stream_s']:.1f} "
        f"+ joined to settled {s['joined_to_settled_s']:.1f}; "
        f"cores while streaming ({whose}): {cores}, machine {s['machine_cores']:.2f}, "
        f"other work {s['other_cores']:.2f}"
        + "".join(f" ({command}: {cores:.2f})" for command, cores in s["others"] if cores > 0.05)
    )


def _uncontended(runs: list[T], other_cores: Callable[[T], float]) -> tuple[list[T], str]:
    """The runs no other work on the machine took more than CONTENDED cores from, and a
    note on what the median counts; all of them, marked unreliable, if there is none."""
    quiet = [run for run in runs if other_cores(run) <= CONTENDED]
    if len(quiet) == len(runs):
        return runs, ""
    if quiet:
        return quiet, f" of the {len(quiet)} rounds without other work"
    return runs, " (UNRELIABLE: other work shared the CPUs in every round)"


def report(
    idle: dict[int, list[tuple[float, Join]]],
    loaded: list[tuple[float, LoadedJoin]],
    options: Options,
) -> list[tuple[bool, str]]:
    verdicts: list[tuple[bool, str]] = []
    for keys, runs in idle.items():
        print(f"\nidle join of node-4, {keys:,} keys held (RF=3):")
        for fill_s, join in runs:
            print(_join_line(fill_s, join))
        counted, note = _uncontended(runs, lambda run: run[1].other_cores())
        rate = _median([j.keys_per_s for _, j in counted])
        mb = _median([j.mb_per_s for _, j in counted])
        end = _median([j.end_to_end for _, j in counted])
        fills = _median([f for f, _ in runs])
        print(
            f"  median{note}: {rate:,.0f} keys/s, {mb:.2f} MB/s; end to end {end:.1f}s; "
            f"fill {fills:.1f}s"
        )
        verdicts.append(
            (
                rate >= STREAM_FLOOR_KEYS_PER_S,
                f"streaming {rate:,.0f} keys/s ({mb:.2f} MB/s) with {keys:,} keys held "
                f"(>= {STREAM_FLOOR_KEYS_PER_S:,})",
            )
        )
        if keys >= JOIN_FLOOR_KEYS:
            verdicts.append(
                (
                    end <= JOIN_FLOOR_S,
                    f"join to a 3-node cluster holding {keys:,} keys in {end:.1f}s "
                    f"(<= {JOIN_FLOOR_S:.0f}s)",
                )
            )
    if loaded:
        print(
            f"\njoin under load ({options.clients} Put + {options.clients} Get clients, QUORUM, "
            f"{loaded[0][1].join.keys_held:,} keys held); ops/s at rest -> while streaming:"
        )
        for fill_s, run in loaded:
            r, d = run.rest, run.during
            print(
                f"  Put {r['put']:,.0f} -> {d['put']:,.0f} ({run.ratio('put'):.2f}x, p99 "
                f"{r['put_rest_p99_ms']:.0f} -> {d['put_during_p99_ms']:.0f} ms); "
                f"Get {r['get']:,.0f} -> {d['get']:,.0f} ({run.ratio('get'):.2f}x, p99 "
                f"{r['get_rest_p99_ms']:.0f} -> {d['get_during_p99_ms']:.0f} ms); "
                f"both {run.ratio('both'):.2f}x; errors {run.errors} {run.first_error}"
            )
            rest, during = _cores(run.rest_cores), _cores(run.during_cores)
            print(f"  cores at rest {rest}; while streaming {during}")
            print(_join_line(fill_s, run.join))
        counted_loaded, note = _uncontended(loaded, lambda run: run[1].other_cores())
        ratios = {
            m: _median([run.ratio(m) for _, run in counted_loaded]) for m in ("put", "get", "both")
        }
        rate = _median([run.join.keys_per_s for _, run in counted_loaded])
        print(
            f"  median{note}: Put {ratios['put']:.2f}x, Get {ratios['get']:.2f}x, both "
            f"{ratios['both']:.2f}x; streaming under load {rate:,.0f} keys/s"
        )
        for method in ("put", "get"):
            verdicts.append(
                (
                    ratios[method] >= LOAD_RATIO_FLOOR,
                    f"{method.capitalize()} while streaming {ratios[method]:.2f}x at rest "
                    f"(>= {LOAD_RATIO_FLOOR}x)",
                )
            )
    print()
    for met, text in verdicts:
        print(f"[{'met' if met else 'MISSED'}] {text}")
    return verdicts


def _wait_quiet(seconds: float) -> None:
    """Wait (at most `seconds`) until other work on the machine uses under half a core."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        busy = background_cores(2.0)
        if busy < 0.5:
            return
        print(f"(waiting for a quiet machine: {busy:.2f} cores busy)", file=sys.stderr)
    print("(the machine stayed busy; measuring anyway)", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("--fill", "--load"):
        _load_main(argv)
        return
    if argv and argv[0] == "--stages":
        print_stages(int(argv[1]) if len(argv) > 1 else 300_000, 3)
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--idle-keys",
        type=lambda text: [int(k) for k in text.split(",") if k],
        default=[JOIN_FLOOR_KEYS],
        help="comma-separated key counts for idle joins ('' for none)",
    )
    parser.add_argument("--load-keys", type=int, default=300_000, help="0: no join under load")
    parser.add_argument("--clients", type=int, default=16, help="Puts and as many Gets in flight")
    parser.add_argument("--rest-seconds", type=float, default=5.0)
    parser.add_argument("--fill-batch", type=int, default=1000)
    parser.add_argument("--fill-concurrency", type=int, default=4)
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for every node (e.g. PEER_TIMEOUT)"
    )
    parser.add_argument(
        "--cold-index",
        action="store_true",
        help="join right after the fill, before any repair round built the sources' indexes",
    )
    parser.add_argument("--wait-quiet", type=float, default=60.0, help="seconds, 0: do not wait")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--profile", type=Path, help="py-spy node-4 and node-1 into this dir")
    parser.add_argument("--py-spy", default=shutil.which("py-spy"), help="the py-spy binary")
    args = parser.parse_args(argv)
    options = Options(
        args.fill_batch,
        args.fill_concurrency,
        args.clients,
        args.rest_seconds,
        dict(item.split("=", 1) for item in args.env),
        args.py_spy,
        args.profile,
        args.cold_index,
    )
    idle: dict[int, list[tuple[float, Join]]] = {keys: [] for keys in args.idle_keys}
    loaded: list[tuple[float, LoadedJoin]] = []
    for round_number in range(args.rounds):
        for keys in args.idle_keys:
            if args.wait_quiet:
                _wait_quiet(args.wait_quiet)
            print(f"round {round_number + 1}: idle join, {keys:,} keys", file=sys.stderr)
            fill_s, join = idle_join(keys, options, f"r{round_number + 1}-{keys}")
            print(_join_line(fill_s, join), file=sys.stderr, flush=True)
            idle[keys].append((fill_s, join))
        if args.load_keys:
            if args.wait_quiet:
                _wait_quiet(args.wait_quiet)
            print(f"round {round_number + 1}: join under load", file=sys.stderr, flush=True)
            loaded.append(loaded_join(args.load_keys, options))
    report(idle, loaded, options)
    if args.json is not None:
        body = {
            "idle": {
                str(keys): [{"fill_s": f, **j.summary()} for f, j in runs]
                for keys, runs in idle.items()
            },
            "loaded": [
                {
                    "fill_s": f,
                    "rest": run.rest,
                    "during": run.during,
                    "errors": run.errors,
                    "first_error": run.first_error,
                    "rest_cores": run.rest_cores,
                    "during_cores": run.during_cores,
                    "join": run.join.summary(),
                }
                for f, run in loaded
            ],
        }
        args.json.write_text(json.dumps(body, indent=2) + "\n")


if __name__ == "__main__":
    main()
