"""Gossip cost: bytes and CPU per node per second, real (3 nodes) and simulated (50, 200).

Run: `python -m benchmarks.gossip` (or `nox -s bench -- gossip`). The real part
starts three idle `python -m a3redis.node` processes on loopback and reads
their CPU time from /proc; the simulated part runs the membership cores of
50 and 200 nodes in one process over an in-memory network, including the
JSON encoding and decoding each exchange costs on the wire, one round per
simulated second, and reports per-node averages.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from a3redis.core.membership import (
    GossipMessage,
    Membership,
    MembershipSettings,
    MemberState,
    Probe,
    Status,
)
from benchmarks.cluster import tls_settings
from benchmarks.servers import ServerSet

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND


def wire_round_trip(message: GossipMessage) -> tuple[GossipMessage, int]:
    body = json.dumps(message.to_json()).encode()
    return GossipMessage.from_json(json.loads(body)), len(body)


def simulate(size: int, seconds: int, seed: int = 1) -> dict[str, float]:
    rng = random.Random(seed)
    cores: dict[str, Membership] = {}
    senders: dict[str, Membership] = {}
    for index in range(size):
        node_id = f"node-{index}"
        me = MemberState(node_id, f"h{index}:50051", f"h{index}:8001", Status.ALIVE, 1)
        core = Membership(me, "bench", 3, MembershipSettings())
        core.add_seeds(f"h{i}:8001" for i in range(size) if i != index)
        cores[me.gossip_addr] = core
        senders[node_id] = core
    now, sent = 0.0, 0
    # Warm up until everyone knows everyone, then measure steady state.
    for _ in range(30):
        now += 1
        for core in cores.values():
            for probe in core.tick(now, rng):
                exchange(cores, senders, probe, now)
    started = time.process_time()
    for _ in range(seconds):
        now += 1
        for core in cores.values():
            for probe in core.tick(now, rng):
                sent += exchange(cores, senders, probe, now)
    cpu = time.process_time() - started
    return {
        "nodes": size,
        "bytes_per_node_per_s": sent / size / seconds,
        "cpu_ms_per_node_per_s": cpu / size / seconds * 1000,
        "members_known": min(len(c.members()) for c in cores.values()),
    }


def exchange(
    cores: dict[str, Membership], senders: dict[str, Membership], probe: Probe, now: float
) -> int:
    target = cores[probe.gossip_addr]
    sender = senders[probe.message.sender]
    pushed, sent = wire_round_trip(probe.message)
    reply, returned = wire_round_trip(target.on_exchange(pushed, now))
    sender.on_reply(probe, reply, now)
    return sent + returned


def real_cluster(seconds: float, secure: bool = False) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="a3r-gossip-"))
    settings = {"REPLICATION_FACTOR": "3"}
    if secure:  # every gossip message signed, and TLS (mutual) on every link
        settings |= {"CLUSTER_SECRET": secrets.token_hex(32), **tls_settings(base / "tls")}
    try:
        with ServerSet(base) as servers:
            nodes = servers.start_cluster("g", 3, settings)
            time.sleep(3)  # let start-up work settle
            before = [cpu_seconds(node.pid) for node in nodes]
            time.sleep(seconds)
            after = [cpu_seconds(node.pid) for node in nodes]
            for node in nodes:
                node.stop(10)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    per_node = [(a - b) / seconds for a, b in zip(after, before, strict=True)]
    return {
        "nodes": 3,
        "max_core_fraction": max(per_node),
        "mean_core_fraction": sum(per_node) / 3,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=20, help="idle window for the real cluster"
    )
    parser.add_argument("--rounds", type=int, default=30, help="simulated seconds per size")
    parser.add_argument(
        "--secure",
        action="store_true",
        help="the real cluster with a cluster secret and TLS on every port (issue #17)",
    )
    args = parser.parse_args(argv)
    real = real_cluster(args.seconds, args.secure)
    what = "secret + TLS " if args.secure else ""
    print(
        f"real 3-node idle {what}cluster: "
        f"{real['max_core_fraction'] * 100:.2f}% of a core per node "
        f"(max; mean {real['mean_core_fraction'] * 100:.2f}%), floor < 1%: "
        f"{'met' if real['max_core_fraction'] < 0.01 else 'MISSED'}"
    )
    print(f"{'nodes':>6} {'bytes/node/s':>14} {'CPU ms/node/s':>14}")
    for size in (3, 50, 200):
        result = simulate(size, args.rounds)
        assert result["members_known"] == size, "the simulated cluster did not converge"
        print(
            f"{size:>6} {result['bytes_per_node_per_s']:>14.0f} "
            f"{result['cpu_ms_per_node_per_s']:>14.3f}"
        )


if __name__ == "__main__":
    main()
