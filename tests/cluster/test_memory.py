"""Replicated requests leave nothing behind: live objects return to their baseline.

Three real nodes (N=3, QUORUM) serve a steady mix of Puts and Gets over a
fixed set of keys from stock grpcio clients; a tenth of the calls have a
3 ms deadline, which many miss (grpcio then resets their streams). After a warm-up
that fills every bounded table, the node's own census (DEBUG_ENDPOINTS=1:
live instances per type and entries per container attribute, a3redis.api.heap)
is taken, then more operations run, then the census again. A structure kept
per request grows with the number of requests; one that is bounded does
not. Counts, not timings or RSS: the test does not depend on the host's speed.
"""

from __future__ import annotations

import random
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from a3redis.core.window import SAMPLES_PER_BUCKET
from a3redis.v1 import kv_pb2 as pb
from tests.conftest import NodeFactory
from tests.support.clusters import start_cluster
from tests.support.node_http import Census, census, metric, metrics_text, parse_samples, statuses
from tests.support.processes import NodeProcess
from tests.support.waiting import wait_for

KEYS = [b"steady-%04d" % i for i in range(500)]
OPERATIONS = ("Put", "Get")
VALUE = b"v" * 64
CONCURRENCY = 16
# Enough for every connection to fill its bounded tables (such as h2's memory
# of the last CLOSED_STREAMS_REMEMBERED closed streams).
WARM_UP_OPERATIONS = 6_000
MEASURED_OPERATIONS = 4_000
# Anything kept per request grows by at least one per operation through its
# node (a third of MEASURED_OPERATIONS coordinate on each node, and every node
# is a replica of every key); a reconnect may add a few.
TOLERANCE = MEASURED_OPERATIONS // 20
GIVE_UP_SHARE = 0.1
# Bounded by time, not by requests: the status page's rolling minute keeps up
# to SAMPLES_PER_BUCKET latencies per second per operation, so it grows for
# its first minute. Checked against that bound instead of the baseline.
BUCKET = "a3redis.core.window._Bucket"
TIME_BOUNDED = {
    f"entries: {BUCKET}.samples": SAMPLES_PER_BUCKET * 60 * len(OPERATIONS),
    f"instances: {BUCKET}": 60 * len(OPERATIONS),
}
# What a bucket adds to the heap's total of objects: itself and its list of samples. The
# total counts them too, so the buckets a slow run adds (one per second per operation)
# are taken out of its growth.
OBJECTS_PER_BUCKET = 2


def growth(before: Census, after: Census) -> dict[str, int]:
    """What grew by more than TOLERANCE, or past its bound if bounded by time."""
    grown = {}
    for section in ("instances", "entries", "totals"):
        old, new = before[section], after[section]
        for name in new.keys() | old.keys():
            label = f"{section}: {name}"
            if label in TIME_BOUNDED:
                if new.get(name, 0) > TIME_BOUNDED[label]:
                    grown[label] = new[name]
                continue
            delta = new.get(name, 0) - old.get(name, 0)
            if section == "totals":
                added = after["instances"].get(BUCKET, 0) - before["instances"].get(BUCKET, 0)
                delta -= OBJECTS_PER_BUCKET * added
            if delta > TOLERANCE:
                grown[label] = delta
    return grown


ACTIVITY = ("a3redis_requests_total", "a3redis_commits_total")


def activity(nodes: list[NodeProcess]) -> list[float]:
    """Each node's gRPC calls served (clients' and peers') and commits, so far (one
    read of its /metrics)."""
    return [
        sum(
            value
            for (name, _), value in parse_samples(metrics_text(node)).items()
            if name in ACTIVITY
        )
        for node in nodes
    ]


def quiet_censuses(nodes: list[NodeProcess]) -> list[Census]:
    """Each node's census once the cluster has gone quiet: the replica calls, repairs
    and commits that outlive the clients' calls would otherwise be counted in one
    census and not in the other."""

    def quiet() -> bool:
        first = activity(nodes)
        time.sleep(0.3)
        return activity(nodes) == first

    wait_for(quiet, 30, "the cluster quiet after the load")
    return [census(node) for node in nodes]


@contextmanager
def channels(nodes: list[NodeProcess]) -> Iterator[list[grpc.Channel]]:
    opened = [
        grpc.insecure_channel(node.endpoint, options=[("grpc.enable_http_proxy", 0)])
        for node in nodes
    ]
    try:
        yield opened
    finally:
        for channel in opened:
            channel.close()


def run_operations(opened: list[grpc.Channel], count: int, rng: random.Random) -> dict[str, int]:
    """`count` QUORUM Puts and Gets spread over every coordinator, CONCURRENCY at a time."""
    puts = [
        c.unary_unary(
            "/a3redis.v1.KeyValue/Put",
            request_serializer=pb.PutRequest.SerializeToString,
            response_deserializer=pb.PutResponse.FromString,
        )
        for c in opened
    ]
    gets = [
        c.unary_unary(
            "/a3redis.v1.KeyValue/Get",
            request_serializer=pb.GetRequest.SerializeToString,
            response_deserializer=pb.GetResponse.FromString,
        )
        for c in opened
    ]
    outcomes: dict[str, int] = {}
    pending: list[Any] = []

    def settle(future: Any) -> None:
        try:
            future.result()
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name
        outcomes[code] = outcomes.get(code, 0) + 1

    for n in range(count):
        node = n % len(opened)
        key = KEYS[rng.randrange(len(KEYS))]
        timeout = 0.003 if rng.random() < GIVE_UP_SHARE else 10.0
        if n % 2:
            put = pb.PutRequest(key=key, value=VALUE, consistency=pb.CONSISTENCY_QUORUM)
            call = puts[node].future(put, timeout=timeout)
        else:
            get = pb.GetRequest(key=key, consistency=pb.CONSISTENCY_QUORUM)
            call = gets[node].future(get, timeout=timeout)
        pending.append(call)
        if len(pending) >= CONCURRENCY:
            settle(pending.pop(0))
    for call in pending:
        settle(call)
    return outcomes


def test_replicated_requests_leave_no_objects_behind(node_factory: NodeFactory) -> None:
    nodes = start_cluster(node_factory, 3, DEBUG_ENDPOINTS="1", SYNC_INTERVAL="3600")
    rng = random.Random(13)
    with channels(nodes) as opened:
        # Every key is written once, then the mixed load fills every bounded table.
        run_operations(opened, 2 * len(KEYS), random.Random(0))
        warm = run_operations(opened, WARM_UP_OPERATIONS, rng)
        assert warm.get("OK", 0) > WARM_UP_OPERATIONS // 2, warm
        # The first census request builds what the HTTP app makes once (routes, caches).
        for node in nodes:
            census(node)
        before = quiet_censuses(nodes)
        measured = run_operations(opened, MEASURED_OPERATIONS, rng)
        after = quiet_censuses(nodes)
    # The load really ran, and some calls really were given up on by the client.
    assert measured.get("OK", 0) > MEASURED_OPERATIONS // 2, measured
    assert measured.get("DEADLINE_EXCEEDED", 0) > 0, measured
    grown = {
        node_id: growth(b, a)
        for node_id, b, a in zip(("node-1", "node-2", "node-3"), before, after, strict=True)
    }
    assert grown == {"node-1": {}, "node-2": {}, "node-3": {}}, grown


def test_the_link_to_a_peer_that_left_is_closed(node_factory: NodeFactory) -> None:
    nodes = start_cluster(node_factory, 3)
    with channels(nodes[:1]) as opened:
        run_operations(opened, 50, random.Random(1))
        assert metric(nodes[0], "a3redis_peer_links") == 2
        assert nodes[2].stop() == 0  # SIGTERM: node-3 stops (still in the ring)
        wait_for(lambda: statuses(nodes[0]).get("node-3") == "dead", 10, "node-3 stopped")
        remove = urllib.request.Request(
            f"http://{nodes[0].gossip}/api/members/node-3/remove", method="POST"
        )
        with urllib.request.urlopen(remove, timeout=5):
            pass  # the operator takes it out of the ring for good
        wait_for(lambda: statuses(nodes[0]).get("node-3") == "left", 10, "node-3 left")
        run_operations(opened, 50, random.Random(2))
        assert metric(nodes[0], "a3redis_peer_links") == 1
