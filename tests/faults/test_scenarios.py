"""Fault scenarios against real node processes in a private network namespace.

Every scenario runs a bounded client load from processes inside the
namespace, injects its faults (nftables partitions, kill -9, SIGSTOP, clock
offsets), ends them, lets repair converge and runs the history checker
(tests/support/history.py) over everything the clients saw and every
replica's final records. Three nodes, N=3, W=R=QUORUM and short timers
(FAST_TIMERS) unless a scenario says otherwise.

Every run uses the lengths of the issue (30 s of load, a 30 s partition, a
2-minute partition cycle); A3REDIS_FAULTS_LONG=1 (`nox -s faults-long`)
soaks three times as long.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence

import pytest

from tests.faults.conftest import ClusterFactory
from tests.support.faults import Converged, FaultCluster, NsNode
from tests.support.history import (
    DELETE,
    GET,
    OK,
    PUT,
    Op,
    check_expiry,
    check_final,
    merge_histories,
    render,
    summarize,
)
from tests.support.waiting import wait_for

LONG = os.environ.get("A3REDIS_FAULTS_LONG") == "1"
SOAK = 3.0 if LONG else 1.0
GOSSIP_INTERVAL = 0.5  # FAST_TIMERS
SYNC_INTERVAL = 2.0
FAILURE_TIMEOUT = 3.0
REQUEST_TIMEOUT = 2.0
# Rounds of anti-entropy start every SYNC_INTERVAL with up to 20% jitter.
SYNC_JITTER = 1.2


def keyset(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(count)]


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def finish(cluster: FaultCluster, history: Sequence[Op], keys: Sequence[str]) -> Converged:
    """Converge, check everything, and fail with the minimal histories of any anomaly."""
    converged = cluster.check(history, keys)
    print(f"{summarize(history)}; converged in {converged.passes} pass(es)")
    for number, reasons in enumerate(converged.unclean, 1):
        print(f"repair pass {number} was not clean:", *reasons, sep="\n  ")
    if converged.anomalies:
        raise AssertionError(
            render(converged.anomalies) + f"\n{summarize(history)}\n" + cluster.logs()
        )
    return converged


def writes_acked(history: Sequence[Op], client: str, start: float, end: float) -> list[Op]:
    return [
        op
        for op in history
        if op.client.startswith(client)
        and op.is_write
        and op.outcome == OK
        and start <= op.invoked
        and op.completed <= end
    ]


# ----- 1. no faults ------------------------------------------------------------------------------


def test_no_faults_mixed_load_has_no_anomalies(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    cluster.start()
    keys = keyset("n", 40)
    duration = 30.0 * SOAK
    begin = time.monotonic() + 2
    # One client routed by key, one that turns through every coordinator.
    cluster.workload(keys=keys, duration=duration, workers=3, route_by_key=True, start_at=begin)
    cluster.workload(keys=keys, duration=duration, workers=2, rotate=True, start_at=begin)
    history = cluster.histories()
    summary = summarize(history)
    assert summary.acked_writes > 100 and summary.ok_reads > 100, summary
    # Without faults (nearly) everything is answered; ABORTED means two clients wrote one
    # key at once. A deadline may still pass on a busy two-core machine.
    answered = [op for op in history if op.outcome == OK or op.code == "ABORTED"]
    assert len(answered) >= 0.98 * len(history), [
        op.describe() for op in history if op.outcome != OK and op.code != "ABORTED"
    ][:10]
    finish(cluster, history, keys)


# ----- 2. a minority partition -------------------------------------------------------------------


def test_minority_acknowledges_no_quorum_write_and_heal_loses_nothing(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    cluster.start()
    n1, n2, n3 = cluster.nodes
    keys = keyset("p", 30)
    lonely, crowd = cluster.client_address(), cluster.client_address()
    partition = 30.0 * SOAK
    begin = time.monotonic() + 2
    cut_at, heal_at = begin + 2, begin + 2 + partition
    duration = heal_at - begin + 4
    common = {"keys": keys, "duration": duration, "workers": 2, "start_at": begin}
    cluster.workload(client="minority", local_host=lonely, endpoints=[n1.endpoint], **common)
    cluster.workload(
        client="majority",
        local_host=crowd,
        endpoints=[n2.endpoint, n3.endpoint],
        rotate=True,
        **common,
    )
    sleep_until(cut_at)
    cluster.partition([n1, lonely], [n2, n3, crowd])
    cut = time.monotonic()
    sleep_until(heal_at)
    cluster.heal()
    healed = time.monotonic()
    history = cluster.histories()

    acked = writes_acked(history, "minority", cut, healed)
    assert not acked, "the minority acknowledged QUORUM writes:\n" + "\n".join(
        op.describe(cut) for op in acked[:10]
    )
    tried = [op for op in history if op.client.startswith("minority") and cut <= op.invoked]
    assert any(op.is_write for op in tried if op.invoked < healed), "the minority never wrote"
    assert writes_acked(history, "majority", cut, healed), "the majority acknowledged nothing"
    converged = finish(cluster, history, keys)
    # One repair round from every node repaired everything; the next pass found nothing.
    assert converged.passes <= 2, converged.unclean


def test_keys_with_ttls_through_a_partition_expire_on_time_and_never_come_back(
    make_cluster: ClusterFactory,
) -> None:
    """Issue 18 on real processes: puts with and without TTLs (some expiring while
    node-3 is cut off, some after the heal), deletes and reads through every node.
    The history checker finds no lost or stale write (an expired put reads as gone),
    and `check_expiry` no value read after it expired, none missing before, and every
    value read with the expiry its put was acknowledged with; after the heal and
    repair, no expired key comes back through any node."""
    cluster = make_cluster(3)
    cluster.start()
    n1, n2, n3 = cluster.nodes
    keys = keyset("t", 30)
    begin = time.monotonic() + 2
    cut_at, heal_at = begin + 4, begin + 4 + 8 * SOAK
    duration = heal_at - begin + 4
    # The clocks of this machine: history times are CLOCK_MONOTONIC, expiries wall ms.
    wall_offset_ms = time.time() * 1000 - time.monotonic() * 1000
    common = {
        "keys": keys,
        "duration": duration,
        "workers": 2,
        "start_at": begin,
        "ttl_ms": [0, 0, 700, 1500, 4000],
    }
    cluster.workload(client="routed", route_by_key=True, **common)
    cluster.workload(client="turning", rotate=True, **common)
    sleep_until(cut_at)
    cluster.partition([n3], [n1, n2])
    sleep_until(heal_at)
    cluster.heal()
    history = cluster.histories()
    with_ttl = [op for op in history if op.kind == PUT and op.outcome == OK and op.ttl_ms]
    read_with_ttl = [op for op in history if op.kind == GET and op.expires_at_ms and op.value]
    assert len(with_ttl) > 50 and len(read_with_ttl) > 20, summarize(history)
    cluster.wait_all_alive(15)
    time.sleep(4.5)  # every TTL written has run out
    for node in cluster.nodes:
        cluster.repair(node)
    after: list[Op] = []
    for node in (n1, n2, n3):
        for key in keys:
            read = cluster.op(node.endpoint, GET, key, client="after")
            assert read.outcome == OK, read.describe()
            after.append(read)
    history = merge_histories([history, after])
    finish(cluster, history, keys)

    def wall_at(moment: float) -> int:
        return int(wall_offset_ms + moment * 1000)

    # One machine, one clock: a few ms either way for how the offset was read.
    anomalies = check_expiry(history, wall_at, -25, 25)
    assert not anomalies, render(anomalies) + "\n" + cluster.logs()


# ----- 3. five nodes, cycling partitions ---------------------------------------------------------


def five_node_partitions(
    nodes: Sequence[NsNode], rng: random.Random
) -> dict[str, Callable[[FaultCluster], str]]:
    def halves(cluster: FaultCluster) -> str:
        shuffled = rng.sample(list(nodes), len(nodes))
        cluster.partition(shuffled[:2], shuffled[2:])
        return f"halves {[n.number for n in shuffled[:2]]} | {[n.number for n in shuffled[2:]]}"

    def bridge(cluster: FaultCluster) -> str:
        shuffled = rng.sample(list(nodes), len(nodes))
        left, middle, right = shuffled[:2], shuffled[2], shuffled[3:]
        cluster.cut((left, right))
        return f"bridge {[n.number for n in left]} - {middle.number} - {[n.number for n in right]}"

    def majority_ring(cluster: FaultCluster) -> str:
        # Each node sees its two ring neighbours: a majority, but not the same one.
        ring = rng.sample(list(nodes), len(nodes))
        pairs = [([ring[i]], [ring[(i + 2) % len(ring)]]) for i in range(len(ring))]
        cluster.cut(*pairs)
        return f"majority ring {[n.number for n in ring]}"

    return {"halves": halves, "bridge": bridge, "majority-ring": majority_ring}


def replicas_agree(cluster: FaultCluster, keys: Sequence[str]) -> bool:
    final = {node.node_id: cluster.local_records(node, keys) for node in cluster.nodes}
    return not [a for a in check_final([], final, cluster.owners) if a.kind == "divergent-replicas"]


def test_five_nodes_cycling_partitions_converge_without_anomalies(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(5)
    cluster.start()
    keys = keyset("r", 40)
    rng = random.Random(int(os.environ.get("A3REDIS_FAULTS_SEED", "3")))
    cuts = five_node_partitions(cluster.nodes, rng)
    # Partitions of 10-20 s, 2 s apart, for two minutes (the cycle).
    total = 120.0 * SOAK
    schedule: list[tuple[str, float]] = []
    kinds = list(cuts)
    while sum(d + 2 for _, d in schedule) < total:
        kind = kinds[len(schedule) % len(kinds)]
        schedule.append((kind, rng.uniform(10, 20)))
    begin = time.monotonic() + 2
    # The load runs from before the first partition until the final heal.
    length = 1 + sum(d + 2 for _, d in schedule) - 2
    common = {"keys": keys, "duration": length, "workers": 2, "start_at": begin}
    cluster.workload(route_by_key=True, **common)
    cluster.workload(rotate=True, **common)
    sleep_until(begin + 1)
    log = []
    for number, (kind, seconds) in enumerate(schedule):
        if number:
            time.sleep(2)
        log.append(f"{time.monotonic() - begin:6.1f}s {cuts[kind](cluster)} for {seconds:.1f}s")
        time.sleep(seconds)
        cluster.heal()
    healed = time.monotonic()
    log.append(f"{healed - begin:6.1f}s final heal")
    print("\n".join(log))
    # Background anti-entropy alone (no repair asked for) makes the replicas identical.
    took = wait_for(
        lambda: replicas_agree(cluster, keys), 60, "replicas identical after the final heal", 0.5
    )
    since_heal = time.monotonic() - healed
    print(f"replicas identical {since_heal:.1f}s after the final heal (poll {took:.1f}s)")
    history = cluster.histories()
    assert since_heal <= 2 * SYNC_INTERVAL * SYNC_JITTER + 1.0, (
        f"replicas converged {since_heal:.1f}s after the final heal, more than two repair "
        f"intervals ({SYNC_INTERVAL}s)\n" + "\n".join(log)
    )
    finish(cluster, history, keys)


# ----- 4. kill -9 and restart --------------------------------------------------------------------


def test_kill_9_during_writes_then_restart_loses_nothing_and_catches_up(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    cluster.start()
    n1, n2, n3 = cluster.nodes
    keys = keyset("k", 40)
    begin = time.monotonic() + 2
    cluster.workload(keys=keys, duration=12, workers=3, route_by_key=True, start_at=begin)
    cluster.workload(
        keys=keys, duration=12, workers=1, endpoints=[n1.endpoint, n2.endpoint], start_at=begin
    )
    sleep_until(begin + 3)
    n3.kill()
    killed = time.monotonic()
    sleep_until(begin + 8)
    n3.start()
    cluster.wait_ready(n3)
    restarted = time.monotonic()
    history = cluster.histories()
    missed = [op for op in history if op.is_write and killed <= op.invoked < restarted]
    assert missed, "no writes while node-3 was down"
    # Hints first: the other nodes hand node-3 what it missed as soon as they see it alive.
    cluster.wait_all_alive(15)
    wait_for(
        lambda: all(cluster.metric(n, "a3redis_hints_pending") == 0 for n in (n1, n2)),
        10,
        "hints for node-3 delivered",
    )
    delivered = sum(cluster.metric(n, "a3redis_hints_delivered") for n in (n1, n2))
    assert delivered > 0, "no hints were delivered to the restarted node"
    # Then one repair round of node-3's makes it identical to the others.
    round_one = cluster.repair(n3)
    final = {node.node_id: cluster.local_records(node, keys) for node in cluster.nodes}
    divergent = [a for a in check_final(history, final, cluster.owners) if "replica" in a.kind]
    assert not divergent, render(divergent) + f"\nafter one round: {round_one}"
    print(f"{len(missed)} writes while down; {delivered:.0f} hints delivered; round: {round_one}")
    finish(cluster, history, keys)


# ----- 5. SIGSTOP, then SIGCONT ------------------------------------------------------------------


def test_a_paused_node_is_marked_dead_then_alive_and_its_requests_fail_in_time(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    cluster.start()
    n1, n2, n3 = cluster.nodes
    keys = keyset("s", 30)
    client_timeout = 3.0
    pause = 15.0
    begin = time.monotonic() + 2
    common = {"keys": keys, "request_timeout": client_timeout, "start_at": begin}
    duration = 2 + pause + 5
    cluster.workload(duration=duration, workers=3, route_by_key=True, **common)
    # Requests that go through the paused node, and only through it.
    cluster.workload(client="via3", endpoints=[n3.endpoint], duration=duration, workers=2, **common)
    sleep_until(begin + 2)
    n3.pause()
    paused = time.monotonic()
    others = (n1, n2)
    dead_after = wait_for(
        lambda: all(cluster.statuses(n)["node-3"] == "dead" for n in others),
        pause - 1,
        "node-3 marked dead while paused",
    )
    sleep_until(paused + pause)
    n3.resume()
    resumed = time.monotonic()
    alive_after = wait_for(
        lambda: all(cluster.statuses(n)["node-3"] == "alive" for n in others),
        20,
        "node-3 alive again after SIGCONT",
        every=0.05,
    )
    history = cluster.histories()
    print(f"marked dead {dead_after:.1f}s after SIGSTOP; alive {alive_after:.2f}s after SIGCONT")
    late = [op for op in history if op.completed - op.invoked > client_timeout + 0.5]
    assert not late, "requests outlived the client deadline:\n" + "\n".join(
        op.describe(paused) for op in late[:10]
    )
    through = [op for op in history if op.client.startswith("via3") and paused <= op.invoked]
    failed_in_pause = [op for op in through if op.invoked < resumed - client_timeout]
    assert failed_in_pause and all(op.outcome != OK for op in failed_in_pause), [
        op.describe(paused) for op in failed_in_pause if op.outcome == OK
    ]
    finish(cluster, history, keys)
    assert dead_after <= FAILURE_TIMEOUT + 2 * GOSSIP_INTERVAL + 1.0, dead_after
    assert alive_after <= 2 * GOSSIP_INTERVAL, (
        f"node-3 was seen alive {alive_after:.2f}s after SIGCONT, more than two gossip rounds "
        f"({2 * GOSSIP_INTERVAL}s)"
    )


# ----- 6. clock skew -----------------------------------------------------------------------------


@pytest.mark.parametrize("secured", [False, True], ids=["open", "cluster-secret"])
def test_sequential_overwrites_through_skewed_coordinators_are_not_lost(
    make_cluster: ClusterFactory, secured: bool
) -> None:
    # With a cluster secret, every message between members carries a timestamp: members
    # 45 s apart (within MAX_CLOCK_SKEW's 60 s) must still accept each other's.
    cluster = make_cluster(3, **({"CLUSTER_SECRET": "s" * 32} if secured else {}))
    n1, n2, _ = cluster.nodes
    n1.extra_env["A3REDIS_CLOCK_OFFSET_MS"] = "-5000"
    n2.extra_env["A3REDIS_CLOCK_OFFSET_MS"] = "40000"
    cluster.start()
    begin = time.monotonic() + 2
    # Two sequential clients on disjoint keys, each turning through all three coordinators.
    mix = {PUT: 4, DELETE: 1, GET: 2}
    for name, prefix in (("seq-a", "a"), ("seq-b", "b")):
        cluster.workload(
            client=name,
            keys=keyset(prefix, 8),
            rotate=True,
            workers=1,
            duration=8,
            max_ops=800,
            mix=mix,
            start_at=begin,
        )
    history = cluster.histories()
    # A sequential client that carries the newest version it saw never loses LWW, unless
    # an earlier write of its own to that key had an unknown outcome (and a later version).
    lost = [
        op
        for op in history
        if op.code == "ABORTED"
        and not any(
            prev.key == op.key
            and prev.is_write
            and prev.outcome != OK
            and prev.invoked < op.invoked
            for prev in history
        )
    ]
    assert not lost, "sequential overwrites lost last-write-wins:\n" + "\n".join(
        op.describe(begin) for op in lost[:10]
    )
    answered = [op for op in history if op.outcome == OK]
    assert len(answered) >= 0.98 * len(history), [
        op.describe(begin) for op in history if op.outcome != OK
    ][:10]
    for key in {op.key for op in history}:
        versions = [op.version for op in history if op.key == key and op.version and op.is_write]
        assert versions == sorted(versions), f"{key}: versions not increasing: {versions}"
    assert len({op.coordinator for op in history}) == 3
    finish(cluster, history, keyset("a", 8) + keyset("b", 8))


# ----- 7. deletes during isolation ---------------------------------------------------------------


def test_deletes_made_while_a_node_was_isolated_stay_deleted_through_repair(
    make_cluster: ClusterFactory,
) -> None:
    # No hints: only anti-entropy can take the tombstones to node-3.
    cluster = make_cluster(3, HINT_WINDOW="0")
    cluster.start()
    n1, n2, n3 = cluster.nodes
    keys = keyset("d", 30)
    ops: list[Op] = []
    for key in keys:
        ops.append(cluster.op(n1.endpoint, PUT, key, f"{key}-old", consistency="ALL"))
    assert all(op.outcome == OK for op in ops), [op.describe() for op in ops if op.outcome != OK]
    cluster.partition([n3], [n1, n2])
    # Half while node-3 still counts as alive (its replica write times out), half once dead.
    for key in keys[:15]:
        ops.append(cluster.op(n1.endpoint, DELETE, key, client="deleter"))
    wait_for(
        lambda: all(cluster.statuses(n)["node-3"] == "dead" for n in (n1, n2)),
        10,
        "node-3 dead",
    )
    for key in keys[15:]:
        ops.append(cluster.op(n2.endpoint, DELETE, key, client="deleter"))
    deletes = [op for op in ops if op.kind == DELETE]
    assert all(op.outcome == OK for op in deletes), [op.describe() for op in deletes]
    isolated = cluster.local_records(n3, keys)
    assert all(r is not None and r.value == f"{k}-old" for k, r in isolated.items())
    cluster.heal()
    cluster.wait_all_alive(15)
    for _ in range(4):
        for node in cluster.nodes:
            cluster.repair(node)
        for node in cluster.nodes:
            records = cluster.local_records(node, keys)
            back = {k: r for k, r in records.items() if r is None or r.value is not None}
            assert not back, f"{node.node_id} holds deleted keys again: {back}"
    time.sleep(2 * SYNC_INTERVAL * SYNC_JITTER)  # background rounds too
    for node in cluster.nodes:
        for level in ("ONE", "QUORUM", "ALL"):
            for key in keys[::7]:
                read = cluster.op(node.endpoint, GET, key, consistency=level, client="reader")
                assert read.outcome == OK and read.value is None, read.describe()
                ops.append(read)
    finish(cluster, merge_histories([ops]), keys)


# ----- 8. no stuck channels after a heal ---------------------------------------------------------


def answered(op: Op) -> bool:
    """The coordinator reached a quorum: acknowledged, or lost last-write-wins."""
    return op.outcome == OK or op.code == "ABORTED"


def first_success_after(history: Sequence[Op], client: str, moment: float) -> Op | None:
    done = [
        op
        for op in history
        if op.client.startswith(client) and op.invoked >= moment and answered(op)
    ]
    return min(done, key=lambda op: op.completed, default=None)


def test_quorum_operations_succeed_through_every_coordinator_soon_after_a_heal(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    cluster.start()
    n1, n2, n3 = cluster.nodes
    keys = keyset("h", 20)
    # Phase one: a cut shorter than FAILURE_TIMEOUT (nobody is declared dead, so
    # coordinators keep calling across it); phase two: long enough to be declared dead.
    short, long_ = 2.0, 8.0
    begin = time.monotonic() + 2
    heals: list[float] = []
    # After each heal: 2 s to settle, then 3 s in which no operation may fail, then 1 s
    # before the next cut, so no checked operation is still in flight when it falls.
    settle, checked, before_next_cut = 2.0, 3.0, 1.0
    after_heal = settle + checked + before_next_cut
    duration = 1 + short + after_heal + long_ + after_heal
    for node in cluster.nodes:
        cluster.workload(
            client=f"via{node.number}",
            endpoints=[node.endpoint],
            keys=keys,
            duration=duration,
            workers=2,
            pause=0.05,
            mix={PUT: 1, GET: 1},
            request_timeout=REQUEST_TIMEOUT + 1,
            start_at=begin,
        )
    sleep_until(begin + 1)
    for seconds in (short, long_):
        # Nodes only: the clients (and the observer) reach every node throughout.
        cluster.partition([n1], [n2, n3])
        time.sleep(seconds)
        cluster.heal()
        heals.append(time.monotonic())
        time.sleep(after_heal)
    history = cluster.histories()
    problems = []
    for heal in heals:
        for node in cluster.nodes:
            name = f"via{node.number}"
            first = first_success_after(history, name, heal)
            if first is None or first.completed > heal + settle:
                problems.append(
                    f"{node.node_id}: no QUORUM operation succeeded within {settle:.0f} s of "
                    f"the heal at "
                    f"+{heal - begin:.1f}s (first: {first.describe(heal) if first else 'none'})"
                )
            stuck = [
                op
                for op in history
                if op.client.startswith(name)
                and heal + settle <= op.invoked < heal + settle + checked
                and not answered(op)
            ]
            if stuck:
                problems.append(
                    f"{node.node_id}: {len(stuck)} operations failed after heal + "
                    f"{settle:.0f} s: " + "; ".join(op.describe(heal) for op in stuck[:3])
                )
    assert not problems, "\n".join(problems) + "\n" + cluster.logs(60)
    finish(cluster, history, keys)


# ----- 9. failure detection with the default timers ----------------------------------------------


def test_a_killed_node_is_dead_everywhere_within_12s_and_alive_within_3s_of_restart(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3, fast=False)  # FAILURE_TIMEOUT=10, GOSSIP_INTERVAL=1
    cluster.start()
    n1, n2, n3 = cluster.nodes
    n2.kill()
    dead = wait_for(
        lambda: all(cluster.statuses(n)["node-2"] == "dead" for n in (n1, n3)),
        12,
        "node-2 declared dead by every other node",
    )
    assert all(
        cluster.statuses(n)["node-1"] == cluster.statuses(n)["node-3"] == "alive" for n in (n1, n3)
    )
    spawned = time.monotonic()
    n2.start()
    cluster.wait_ready(n2)
    ready = time.monotonic()
    alive = wait_for(cluster.all_alive, 3, "node-2 alive again everywhere", every=0.05)
    print(
        f"dead everywhere {dead:.1f}s after kill -9; alive everywhere {alive:.2f}s after it "
        f"was ready ({ready - spawned:.1f}s to start)"
    )


# ----- a seeded random schedule of faults --------------------------------------------------------


SEEDS = [int(s) for s in os.environ.get("A3REDIS_FAULTS_SEEDS", "11,12").split(",")]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_fault_schedule(make_cluster: ClusterFactory, seed: int) -> None:
    rng = random.Random(seed)
    cluster = make_cluster(3)
    cluster.start()
    nodes = cluster.nodes
    keys = keyset("x", 30)
    near = [cluster.client_address() for _ in nodes]  # a client beside each node
    steps = rng.randint(3, 4)
    begin = time.monotonic() + 2
    plan = [
        (rng.choice(["partition", "isolate", "bridge", "kill", "pause"]), rng.uniform(3, 6))
        for _ in range(steps)
    ]
    length = 1 + sum(d + 1.5 for _, d in plan) + 2
    for node, address in zip(nodes, near, strict=True):
        cluster.workload(
            client=f"near{node.number}",
            local_host=address,
            endpoints=[node.endpoint] + [o.endpoint for o in nodes if o is not node],
            keys=keys,
            duration=length,
            workers=1,
            start_at=begin,
            seed=seed,
        )
    cluster.workload(keys=keys, duration=length, workers=2, route_by_key=True, start_at=begin)
    sleep_until(begin + 1)
    log = []
    for kind, seconds in plan:
        victim = rng.choice(nodes)
        rest = [n for n in nodes if n is not victim]
        at = time.monotonic() - begin
        if kind == "partition":
            # The victim and its client against the others and theirs.
            side: list[NsNode | str] = [victim, near[victim.number - 1]]
            cluster.partition(side, [*rest, *(near[n.number - 1] for n in rest)])
        elif kind == "isolate":
            # From the other nodes only: every client still reaches it.
            cluster.partition([victim], rest)
        elif kind == "bridge":
            cluster.cut(([rest[0]], [rest[1]]))
        elif kind == "kill":
            victim.kill()
        else:
            victim.pause()
        log.append(f"{at:5.1f}s {kind} node-{victim.number} for {seconds:.1f}s")
        time.sleep(seconds)
        if kind == "kill":
            victim.start()
            cluster.wait_ready(victim)
        elif kind == "pause":
            victim.resume()
        cluster.heal()
        time.sleep(1.5)
    history = cluster.histories()
    print(f"seed {seed}:\n" + "\n".join(log))
    try:
        finish(cluster, history, keys)
    except AssertionError as error:
        raise AssertionError(f"seed {seed}, schedule:\n" + "\n".join(log) + f"\n{error}") from None


# ----- found by the simulation -------------------------------------------------------------------


def test_nodes_restarted_behind_a_partition_acknowledge_no_write_they_cannot_place(
    make_cluster: ClusterFactory,
) -> None:
    """Fails today: see test_simulation.test_a_restarted_node_acknowledges_only_writes_it_can_place.

    Two of five nodes restart where they reach only each other. Each one's ring is
    built from the members it has heard of ({node-4, node-5}), so for every key
    both are "the replicas" and a QUORUM write through them is acknowledged. Once
    the partition heals they learn the real ring, in which most of those keys
    belong to other nodes; anti-entropy compares only the partitions two nodes
    share, so nothing ever moves the writes to their real replicas.
    """
    cluster = make_cluster(5)
    cluster.start()
    n1, n2, n3, n4, n5 = cluster.nodes
    behind = cluster.client_address()
    n4.kill()
    n5.kill()
    cluster.partition([n4, n5, behind], [n1, n2, n3])
    n4.start()
    n5.start()
    cluster.wait_ready(n4)
    cluster.wait_ready(n5)
    wait_for(lambda: cluster.statuses(n5).get("node-4") == "alive", 10, "node-5 hears node-4")
    keys = keyset("b", 20)
    ops = [
        cluster.op(n5.endpoint, PUT, key, f"{key}-behind", local_host=behind, client="behind")
        for key in keys
    ]
    acked = [op for op in ops if op.outcome == OK]
    print(f"{len(acked)} of {len(ops)} QUORUM writes acknowledged behind the partition")
    cluster.heal()
    finish(cluster, merge_histories([ops]), keys)
