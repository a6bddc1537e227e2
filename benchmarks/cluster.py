"""Quorum replication cost: a 3-node cluster (N=3, QUORUM) against one node, same run.

Run: `python -m benchmarks.cluster [--seconds 5] [--rounds 3]`. Starts one node
(REPLICATION_FACTOR=1) and a three-node cluster (REPLICATION_FACTOR=3), all
FSYNC=always, and drives each from a separate load process (grpc.aio,
`--load` mode of this module) that keeps `concurrency` calls in flight,
spread over the endpoints it is given. Reports ops/s (or keys/s), p50 and
p99 for Put and Get (100-byte values, concurrency 64) and BatchPut (100 keys
per call, concurrency 8), and the cluster/single ratios: the round with the
median cluster figure of `--rounds` (the host's speed drifts between
minutes, so one round proves little), every round's cluster figure, and a
verdict on each floor of the replication issue.

`--secret` measures the cost of the cluster secret instead (issue #17): the
3-node cluster with a CLUSTER_SECRET against the same without, alternately
in each round, and the median of the per-round ratios against its floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.servers import ServerSet

VALUE = b"v" * 100


# ----- the load process ---------------------------------------------------------------------


async def _load(
    endpoints: list[str], method: str, concurrency: int, seconds: float
) -> dict[str, Any]:
    import grpc.aio

    from a3redis.v1 import kv_pb2 as pb

    channels = [
        grpc.aio.insecure_channel(e, options=[("grpc.enable_http_proxy", 0)]) for e in endpoints
    ]
    calls = {
        "put": [
            c.unary_unary(
                "/a3redis.v1.KeyValue/Put",
                request_serializer=pb.PutRequest.SerializeToString,
                response_deserializer=pb.PutResponse.FromString,
            )
            for c in channels
        ],
        "get": [
            c.unary_unary(
                "/a3redis.v1.KeyValue/Get",
                request_serializer=pb.GetRequest.SerializeToString,
                response_deserializer=pb.GetResponse.FromString,
            )
            for c in channels
        ],
        "batch_put": [
            c.unary_unary(
                "/a3redis.v1.KeyValue/BatchPut",
                request_serializer=pb.BatchPutRequest.SerializeToString,
                response_deserializer=pb.BatchPutResponse.FromString,
            )
            for c in channels
        ],
    }[method]
    latencies: list[float] = []
    errors = 0
    rng = random.Random(1)
    deadline = time.monotonic() + seconds
    counter = 0

    async def worker(worker_id: int) -> None:
        nonlocal errors, counter
        while time.monotonic() < deadline and errors < 100:
            counter += 1
            n = counter
            call = calls[n % len(calls)]
            if method == "put":
                request: Any = pb.PutRequest(key=b"k%08d" % n, value=VALUE)
            elif method == "get":
                request = pb.GetRequest(key=b"k%08d" % rng.randrange(1, 5000))
            else:
                request = pb.BatchPutRequest(
                    pairs=[
                        pb.KeyValuePair(key=b"b%08d-%03d" % (n, i), value=VALUE) for i in range(100)
                    ]
                )
            started = time.perf_counter()
            try:
                await call(request, timeout=10)
                latencies.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError:
                errors += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.monotonic() - started
    for channel in channels:
        await channel.close()
    latencies.sort()

    def pick(quantile: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(quantile * len(latencies)))] * 1000

    return {
        "ops": len(latencies) / elapsed,
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "errors": errors,
    }


def run_load(endpoints: list[str], method: str, concurrency: int, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.cluster",
            "--load",
            ",".join(endpoints),
            method,
            str(concurrency),
            str(seconds),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# ----- the servers --------------------------------------------------------------------------


def measure(
    count: int, factor: int, seconds: float, extra: dict[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    base = Path(tempfile.mkdtemp(prefix="a3r-cluster-"))
    settings = {"REPLICATION_FACTOR": str(factor), "FSYNC": "always", **(extra or {})}
    try:
        with ServerSet(base) as servers:
            nodes = servers.start_cluster(f"c{count}-", count, settings)
            time.sleep(1)
            endpoints = [node.target for node in nodes]
            results = {
                "put": run_load(endpoints, "put", 64, seconds),
                "get": run_load(endpoints, "get", 64, seconds),
                "batch_put": run_load(endpoints, "batch_put", 8, seconds),
            }
            results["batch_put"]["keys"] = results["batch_put"]["ops"] * 100
            for node in nodes:
                node.stop(20)
            return results
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--load":
        endpoints, method, concurrency, seconds = (
            argv[1].split(","),
            argv[2],
            int(argv[3]),
            float(argv[4]),
        )
        print(json.dumps(asyncio.run(_load(endpoints, method, concurrency, seconds))))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="single node and cluster, alternately, this many times; the median round is reported",
    )
    parser.add_argument(
        "--secret",
        action="store_true",
        help="instead: the 3-node cluster with a CLUSTER_SECRET against the same without, "
        f"alternately (issue #17's floor: >= {SECRET_FLOOR}x)",
    )
    args = parser.parse_args(argv)
    if args.secret:
        compare_secret(args.rounds, args.seconds)
        return
    singles, clusters = [], []
    for round_number in range(args.rounds):
        print(f"round {round_number + 1} of {args.rounds}", file=sys.stderr, flush=True)
        singles.append(measure(1, 1, args.seconds))
        clusters.append(measure(3, 3, args.seconds))
    report(singles, clusters)


CASES = (
    ("Put c64 QUORUM", "put", "ops"),
    ("Get c64 QUORUM", "get", "ops"),
    ("BatchPut x100 c8 QUORUM", "batch_put", "keys"),
)
# The floors of the replication issue: the older project acknowledged 400-550 Puts/s
# on this machine before replicating; three times that, and a batch path.
PUT_FLOOR = 1_650
BATCH_FLOOR = 20_000
RATIO_FLOOR = 0.5


def report(singles: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> None:
    """Medians over the rounds (by the cluster figure), each round's figures, and verdicts."""
    print(f"{'case':<28} {'single':>10} {'cluster':>10} {'ratio':>6}   p50/p99 ms (cluster)")
    medians: dict[str, tuple[float, float]] = {}
    for name, key, unit in CASES:
        rounds = sorted(zip(singles, clusters, strict=True), key=lambda pair: pair[1][key][unit])
        one, three = rounds[len(rounds) // 2]
        medians[key] = (one[key][unit], three[key][unit])
        row = three[key]
        print(
            f"{name + ' ' + unit + '/s':<28} {medians[key][0]:>10,.0f} {medians[key][1]:>10,.0f} "
            f"{medians[key][1] / medians[key][0]:>6.2f}   "
            f"{row['p50_ms']:.1f}/{row['p99_ms']:.1f}  errors {row['errors']}"
        )
        each = ", ".join(f"{c[key][unit]:,.0f}" for c in clusters)
        print(f"{'':<28} cluster per round: {each}")
    put_single, put = medians["put"]
    get_single, get = medians["get"]
    _, batch = medians["batch_put"]
    for verdict, text in (
        (
            put / put_single >= RATIO_FLOOR,
            f"cluster Put {put / put_single:.2f}x single (>= {RATIO_FLOOR}x)",
        ),
        (
            get / get_single >= RATIO_FLOOR,
            f"cluster Get {get / get_single:.2f}x single (>= {RATIO_FLOOR}x)",
        ),
        (put >= PUT_FLOOR, f"cluster Put {put:,.0f}/s (>= {PUT_FLOOR:,}/s, 3x the old project)"),
        (batch >= BATCH_FLOOR, f"cluster BatchPut {batch:,.0f} keys/s (>= {BATCH_FLOOR:,})"),
    ):
        print(f"[{'met' if verdict else 'MISSED'}] {text}")


# Issue #17: Put and Get with the cluster secret on, against the same cluster without.
SECRET_FLOOR = 0.9


def compare_secret(rounds: int, seconds: float) -> None:
    """Each round runs the cluster without and with a secret (which goes first alternates);
    the verdict takes the median of the per-round ratios."""
    secret = {"CLUSTER_SECRET": secrets.token_hex(32)}
    plain: list[dict[str, Any]] = []
    signed: list[dict[str, Any]] = []
    for round_number in range(rounds):
        print(f"round {round_number + 1} of {rounds}", file=sys.stderr, flush=True)
        if round_number % 2:
            signed.append(measure(3, 3, seconds, secret))
            plain.append(measure(3, 3, seconds))
        else:
            plain.append(measure(3, 3, seconds))
            signed.append(measure(3, 3, seconds, secret))
    print(f"{'case':<28} {'no secret':>10} {'secret':>10} {'ratio':>6}   per round")
    for name, key, unit in CASES:
        ratios = sorted(s[key][unit] / p[key][unit] for p, s in zip(plain, signed, strict=True))
        ratio = ratios[len(ratios) // 2]
        each = ", ".join(f"{r:.2f}" for r in ratios)
        middle = sorted(zip(plain, signed, strict=True), key=lambda pair: pair[1][key][unit])
        base, with_secret = middle[len(middle) // 2]
        print(
            f"{name + ' ' + unit + '/s':<28} {base[key][unit]:>10,.0f} "
            f"{with_secret[key][unit]:>10,.0f} {ratio:>6.2f}   {each}  "
            f"errors {with_secret[key]['errors']}"
        )
        if key in ("put", "get"):
            verdict = "met" if ratio >= SECRET_FLOOR else "MISSED"
            print(f"[{verdict}] {name} with the cluster secret {ratio:.2f}x (>= {SECRET_FLOOR}x)")


if __name__ == "__main__":
    main()
