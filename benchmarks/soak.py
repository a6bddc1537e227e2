"""The soak: a steady mixed load on constant data, and whether the nodes' memory stays flat.

`python -m benchmarks.soak` (or `nox -s soak`) starts three nodes
(REPLICATION_FACTOR=3, FSYNC=always, anti-entropy every 10 s), fills a
fixed set of keys, and runs 50/50 QUORUM Puts and Gets of those keys through
every node from a separate load process (grpc.aio) for `--minutes`. Every
`--sample-every` seconds it reads each node's resident memory and open file
descriptors from /proc and prints them as a table. The live data never
grows, so neither should the nodes: the verdict compares each node's last
sample, and its largest, with its sample at `--judge-from` minutes (the
warm-up), against `--max-growth` (5 %); open descriptors must not drift.
Exit status 0 if every node passes, 1 otherwise. Loopback only; the load is
bounded in time and in operations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.procfs import rss_bytes
from benchmarks.servers import HOST, ServerProcess, ServerSet

SETTINGS = {
    "REPLICATION_FACTOR": "3",
    "FSYNC": "always",
    "SYNC_INTERVAL": "10",
}
# Descriptors a node may open for a moment (a gossip exchange, a repair call)
# without that being a drift.
FD_JITTER = 4


@dataclass
class Sample:
    elapsed_s: float
    operations: int
    rss_bytes: list[int]
    open_fds: list[int]


@dataclass
class Verdict:
    node: str
    rss_at_judge_from: int
    rss_last: int
    rss_max: int
    growth_last: float
    growth_max: float
    fds_at_judge_from: int
    fds_max: int
    passed: bool


@dataclass
class SoakReport:
    minutes: float
    operations: int
    errors: dict[str, int]
    samples: list[Sample] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ----- the load process ---------------------------------------------------------------------


async def _load(endpoints: list[str], seconds: float, keys: int, value_bytes: int) -> None:
    """Run until `seconds` pass (or the op bound), printing the running count once a second."""
    import grpc
    import grpc.aio

    from a3redis.v1 import kv_pb2 as pb

    channels = [
        grpc.aio.insecure_channel(endpoint, options=[("grpc.enable_http_proxy", 0)])
        for endpoint in endpoints
    ]

    def method(channel: grpc.aio.Channel, name: str, request: type, response: type) -> Any:
        return channel.unary_unary(
            f"/a3redis.v1.KeyValue/{name}",
            request_serializer=request.SerializeToString,  # type: ignore[attr-defined]
            response_deserializer=response.FromString,  # type: ignore[attr-defined]
        )

    puts = [method(c, "Put", pb.PutRequest, pb.PutResponse) for c in channels]
    gets = [method(c, "Get", pb.GetRequest, pb.GetResponse) for c in channels]
    names = [b"soak-%06d" % i for i in range(keys)]
    value = b"v" * value_bytes
    quorum = pb.CONSISTENCY_QUORUM
    # The fill: every key once, so the live data is constant from here on.
    for start in range(0, keys, 64):
        await asyncio.gather(
            *(
                puts[i % len(puts)](pb.PutRequest(key=k, value=value, consistency=quorum))
                for i, k in enumerate(names[start : start + 64])
            )
        )
    deadline = time.monotonic() + seconds
    max_operations = int(seconds * 20_000)  # far above what 2 cores do; a bound all the same
    done = 0
    errors: dict[str, int] = {}

    async def worker(seed: int) -> None:
        nonlocal done
        rng = random.Random(seed)
        while time.monotonic() < deadline and done < max_operations:
            node = rng.randrange(len(endpoints))
            key = names[rng.randrange(keys)]
            try:
                if rng.random() < 0.5:
                    await puts[node](
                        pb.PutRequest(key=key, value=value, consistency=quorum), timeout=10
                    )
                else:
                    await gets[node](pb.GetRequest(key=key, consistency=quorum), timeout=10)
            except grpc.aio.AioRpcError as error:
                name = error.code().name
                errors[name] = errors.get(name, 0) + 1
            done += 1

    async def report() -> None:
        while time.monotonic() < deadline:
            print(json.dumps({"operations": done, "errors": errors}), flush=True)
            await asyncio.sleep(1)

    reporter = asyncio.ensure_future(report())
    await asyncio.gather(*(worker(seed) for seed in range(16)))
    reporter.cancel()
    print(json.dumps({"operations": done, "errors": errors, "final": True}), flush=True)
    for channel in channels:
        await channel.close()


def load_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.soak load")
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--value-bytes", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_load(args.endpoints.split(","), args.seconds, args.keys, args.value_bytes))
    return 0


# ----- the harness --------------------------------------------------------------------------


def judge(
    names: list[str], samples: list[Sample], judge_from_s: float, max_growth: float
) -> list[Verdict]:
    settled = [s for s in samples if s.elapsed_s >= judge_from_s]
    if len(settled) < 2:
        raise SystemExit(f"too few samples after {judge_from_s:.0f}s to judge: run longer")
    first = settled[0]
    verdicts = []
    for index, name in enumerate(names):
        base, last = first.rss_bytes[index], settled[-1].rss_bytes[index]
        peak = max(s.rss_bytes[index] for s in settled)
        fds = max(s.open_fds[index] for s in settled)
        verdicts.append(
            Verdict(
                node=name,
                rss_at_judge_from=base,
                rss_last=last,
                rss_max=peak,
                growth_last=last / base - 1,
                growth_max=peak / base - 1,
                fds_at_judge_from=first.open_fds[index],
                fds_max=fds,
                passed=(
                    last / base - 1 < max_growth
                    and peak / base - 1 < max_growth
                    and fds - first.open_fds[index] <= FD_JITTER
                ),
            )
        )
    return verdicts


def run_soak(args: argparse.Namespace) -> SoakReport:
    seconds = args.minutes * 60
    with (
        tempfile.TemporaryDirectory(prefix="a3redis-soak-", dir=args.data_root) as root,
        ServerSet(Path(root)) as servers,
    ):
        nodes: list[ServerProcess] = servers.start_cluster("soak", 3, SETTINGS)
        endpoints = ",".join(f"{HOST}:{node.grpc_port}" for node in nodes)
        load = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.soak",
                "load",
                f"--endpoints={endpoints}",
                f"--seconds={seconds}",
                f"--keys={args.keys}",
                f"--value-bytes={args.value_bytes}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert load.stdout is not None
        report = SoakReport(args.minutes, 0, {})
        started = time.monotonic()
        next_sample = started
        names = [f"node-{i + 1}" for i in range(len(nodes))]
        print(
            f"{'elapsed':>8} {'ops':>9}  "
            + "  ".join(f"{n + ' RSS MB':>14} {'fds':>4}" for n in names)
        )
        try:
            for line in load.stdout:
                status = json.loads(line)
                report.operations, report.errors = status["operations"], status["errors"]
                now = time.monotonic()
                for node in nodes:
                    if not node.running():
                        raise SystemExit(f"{node.name} exited:\n{node.output()}")
                if now >= next_sample or status.get("final"):
                    sample = Sample(
                        round(now - started, 1),
                        report.operations,
                        [rss_bytes(node.pid) for node in nodes],
                        [open_fds(node.pid) for node in nodes],
                    )
                    report.samples.append(sample)
                    print(
                        f"{sample.elapsed_s:>7.0f}s {sample.operations:>9}  "
                        + "  ".join(
                            f"{rss / 2**20:>14.1f} {fds:>4}"
                            for rss, fds in zip(sample.rss_bytes, sample.open_fds, strict=True)
                        ),
                        flush=True,
                    )
                    next_sample += args.sample_every
        finally:
            if load.poll() is None:
                load.kill()
            load.wait(30)
        report.verdicts = judge(names, report.samples, args.judge_from * 60, args.max_growth)
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load"]:
        return load_main(argv[1:])
    parser = argparse.ArgumentParser(prog="benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sample-every", type=float, default=20.0, help="seconds")
    parser.add_argument(
        "--judge-from", type=float, default=2.0, help="minutes of warm-up before judging"
    )
    parser.add_argument("--max-growth", type=float, default=0.05)
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--value-bytes", type=int, default=64)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    report = run_soak(args)
    print(f"\n{report.operations} operations in {args.minutes:g} min; errors: {report.errors}")
    for v in report.verdicts:
        print(
            f"{v.node}: RSS {v.rss_at_judge_from / 2**20:.1f} MB at {args.judge_from:g} min -> "
            f"{v.rss_last / 2**20:.1f} MB at the end ({v.growth_last:+.1%}; "
            f"max {v.rss_max / 2**20:.1f} MB, {v.growth_max:+.1%}); "
            f"fds {v.fds_at_judge_from} -> max {v.fds_max}: "
            + ("PASS" if v.passed else f"FAIL (floor: < {args.max_growth:.0%}, fds constant)")
        )
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=2))
    return 0 if all(v.passed for v in report.verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
