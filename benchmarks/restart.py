"""The restart case: how long a node with many keys takes to come back, and its memory per key.

One node (FSYNC=no for loading speed; durability is not what is measured) is
filled through BatchPut, stopped with SIGTERM and restarted on the same
DATA_DIR three times, each with different files on disk:

1. after one fill round: the log holds every key once (pure log replay);
2. after a second round over the same keys: the log holds every key twice,
   the most log the compaction policy lets pile up before it snapshots;
3. after a few more writes have triggered compaction: a snapshot plus a
   short log.

With `ttl=True` (`benchmarks/run.py`'s restart case with TTLs, issue #18) half
the keys of every fill round carry a TTL (a day: none expires during the
run), so the log and snapshot hold records of both layouts.

Restart time runs from the `Popen` of the new process until /health answers
"ok" AND a Get of known keys returns the value last written to them. What
was on disk is reported with each restart, so the figures stay honest if the
compaction policy changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from a3redis.v1 import kv_pb2 as pb
from benchmarks.load import (
    CHANNEL_OPTIONS,
    SERVICE,
    Fill,
    LoadPlan,
    Target,
    fill_key,
    fill_value,
    plan_timeout,
    run_load,
)
from benchmarks.procfs import rss_bytes
from benchmarks.servers import ServerError, ServerProcess, ServerSet

FILL_BATCH_KEYS = 1000
FILL_CONCURRENCY = 4
# Half the keys expire, a day after their write (issue #18's restart floor).
FILL_TTL_MS = 86_400_000
FILL_TTL_EVERY = 2
READY_TIMEOUT_S = 120.0
COMPACTION_TIMEOUT_S = 120.0


@dataclass(slots=True)
class RestartRun:
    label: str
    snapshot_bytes: int
    log_bytes: int
    stop_s: float
    healthy_s: float
    ready_s: float  # healthy and the probe Gets answered correctly
    rss_bytes: int


@dataclass(slots=True)
class RestartResult:
    keys: int
    fill_keys_per_s: float
    empty_start_s: float
    rss_empty_bytes: int
    rss_filled_bytes: int
    runs: list[RestartRun] = field(default_factory=list)

    @property
    def bytes_per_key_filled(self) -> float:
        return (self.rss_filled_bytes - self.rss_empty_bytes) / self.keys

    def bytes_per_key_recovered(self, run: RestartRun) -> float:
        return (run.rss_bytes - self.rss_empty_bytes) / self.keys

    @property
    def worst_ready_s(self) -> float:
        return max(run.ready_s for run in self.runs)


class _Expected:
    """The value last written to a few probe keys, to check each restart with Gets."""

    def __init__(self, keys: int) -> None:
        self.probes = sorted({0, keys // 2, keys - 1})
        self.values: dict[int, bytes] = {}

    def wrote(self, fill: Fill) -> None:
        for index in self.probes:
            if index < fill.count:
                self.values[index] = fill_value(fill.round_number, index)


def _disk_usage(data_dir: Path) -> tuple[int, int]:
    snapshots = sum(p.stat().st_size for p in data_dir.glob("snapshot-*.snap"))
    logs = sum(p.stat().st_size for p in data_dir.glob("log-*.wal"))
    return snapshots, logs


def _check_probes(node: ServerProcess, expected: _Expected) -> None:
    with grpc.insecure_channel(node.target, options=CHANNEL_OPTIONS) as channel:
        get = channel.unary_unary(
            SERVICE + "Get",
            request_serializer=pb.GetRequest.SerializeToString,
            response_deserializer=pb.GetResponse.FromString,
        )
        for index, value in expected.values.items():
            response = get(pb.GetRequest(key=fill_key(index)), timeout=30, wait_for_ready=True)
            if not response.found or response.value != value:
                raise ServerError(
                    f"after restart, key {fill_key(index)!r} read {response.value[:20]!r}, "
                    f"expected {value[:20]!r}"
                )


def _restart(
    servers: ServerSet,
    node: ServerProcess,
    data_dir: Path,
    settings: dict[str, str],
    expected: _Expected,
    label: str,
) -> tuple[ServerProcess, RestartRun]:
    stop_s = node.stop()
    snapshot_bytes, log_bytes = _disk_usage(data_dir)
    started = time.monotonic()
    restarted = servers.start_node(
        "restart-node",
        data_dir,
        settings,
        ports=(node.grpc_port, node.http_port or 0),
        wait_timeout=None,
    )
    restarted.wait_healthy(READY_TIMEOUT_S)
    healthy_s = time.monotonic() - started
    _check_probes(restarted, expected)
    ready_s = time.monotonic() - started
    run = RestartRun(
        label, snapshot_bytes, log_bytes, stop_s, healthy_s, ready_s, rss_bytes(restarted.pid)
    )
    return restarted, run


def _fill(node: ServerProcess, fill: Fill, expected: _Expected) -> float:
    plan = LoadPlan(servers={node.name: Target(node.target, node.pid)}, fills={node.name: fill})
    report = run_load(plan, plan_timeout(plan))
    expected.wrote(fill)
    return report.fills[node.name].keys_per_s


def _wait_for_snapshot(data_dir: Path, node: ServerProcess) -> None:
    """Wait until compaction has written a snapshot and removed the logs it replaces."""
    deadline = time.monotonic() + COMPACTION_TIMEOUT_S
    while time.monotonic() < deadline:
        snapshots = list(data_dir.glob("snapshot-*.snap"))
        logs = list(data_dir.glob("log-*.wal"))
        if snapshots and len(logs) == 1 and not list(data_dir.glob("*.tmp")):
            return
        if not node.running():
            raise ServerError(f"node exited while compacting:\n{node.output()}")
        time.sleep(0.1)
    raise ServerError(f"no snapshot within {COMPACTION_TIMEOUT_S}s in {data_dir}")


def measure_restart(
    servers: ServerSet, data_dir: Path, keys: int, ttl: bool = False
) -> RestartResult:
    # The smallest COMPACT_MIN_BYTES allowed: compaction is then decided only by
    # the log-to-live-data ratio, so a snapshot does appear in this run.
    settings = {"FSYNC": "no", "COMPACT_MIN_BYTES": "4096"}
    expected = _Expected(keys)
    started = time.monotonic()
    node = servers.start_node("restart-node", data_dir, settings)
    empty_start_s = time.monotonic() - started
    rss_empty = rss_bytes(node.pid)

    expiry = {"ttl_ms": FILL_TTL_MS, "ttl_every": FILL_TTL_EVERY} if ttl else {}
    round_one = Fill(keys, 1, FILL_BATCH_KEYS, FILL_CONCURRENCY, **expiry)
    fill_rate = _fill(node, round_one, expected)
    result = RestartResult(keys, fill_rate, empty_start_s, rss_empty, rss_bytes(node.pid))

    node, run = _restart(servers, node, data_dir, settings, expected, "log replay, 1x keys")
    result.runs.append(run)

    _fill(node, Fill(keys, 2, FILL_BATCH_KEYS, FILL_CONCURRENCY, **expiry), expected)
    node, run = _restart(servers, node, data_dir, settings, expected, "log replay, 2x keys")
    result.runs.append(run)

    # A few more writes push the log past twice the live data: compaction starts.
    _fill(node, Fill(min(keys, FILL_BATCH_KEYS), 3, FILL_BATCH_KEYS, 1, **expiry), expected)
    _wait_for_snapshot(data_dir, node)
    node, run = _restart(servers, node, data_dir, settings, expected, "snapshot + short log")
    result.runs.append(run)
    node.stop()
    return result


def main(argv: list[str] | None = None) -> None:
    """`python -m benchmarks.restart [--keys N] [--ttl]`: the restart case on its own."""
    import argparse
    import sys
    import tempfile

    from benchmarks.report import restart_table

    parser = argparse.ArgumentParser(prog="python -m benchmarks.restart", description=main.__doc__)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--ttl", action="store_true", help="half the keys carry a TTL")
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="a3redis-restart-") as root_name,
        ServerSet(Path(root_name)) as servers,
    ):
        print(f"restart case, {args.keys:,} keys, ttl={args.ttl}", file=sys.stderr, flush=True)
        result = measure_restart(servers, Path(root_name) / "data", args.keys, args.ttl)
    print(restart_table(result))


if __name__ == "__main__":
    main()
