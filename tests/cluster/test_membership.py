"""Membership across real node processes on loopback, configured the seed's way (PEERS)."""

from __future__ import annotations

import json
import select
import signal
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import grpc

from a3redis.v1 import kv_pb2 as pb
from tests.conftest import NodeFactory
from tests.hostile.raw import RawClient
from tests.hostile.raw import refused as call_refused
from tests.support.clusters import peered_nodes, wait_all_alive_and_ready
from tests.support.node_http import get_json, membership, ready, statuses
from tests.support.processes import HOST, NodeProcess, run_cli
from tests.support.waiting import wait_for


def test_three_nodes_find_each_other_detect_death_restart_and_leave(
    node_factory: NodeFactory,
) -> None:
    nodes = peered_nodes(node_factory)
    # Start in reverse order, without waiting: seeds that are not up yet are retried.
    for node in reversed(nodes):
        node.start(wait=False)
    for node in nodes:
        node.wait_ready()
    everyone = {"node-1": "alive", "node-2": "alive", "node-3": "alive"}
    wait_for(lambda: all(statuses(n) == everyone for n in nodes), 5, "all alive")
    # Alive is not yet in the ring: a node that has not passed its start gate owns
    # nothing. What follows (a death, a restart, a SIGTERM) is about ring members.
    wait_all_alive_and_ready(nodes, 30)
    # node-3 started first: its seeds were not up yet. It says so once per seed, not per retry.
    for peer in nodes[:2]:
        assert nodes[2].output().count(f"peer {peer.endpoint} is not reachable yet") <= 1
    entry = membership(nodes[0])["node-2"]
    assert entry["addr"] == nodes[1].endpoint
    assert entry["gossip_addr"] == f"{HOST}:{nodes[1].http_port}"
    assert abs(entry["timestamp"] - time.time()) < 5
    incarnation = entry["incarnation"]

    nodes[1].kill()
    survivors = [nodes[0], nodes[2]]
    wait_for(
        lambda: all(statuses(n)["node-2"] == "dead" for n in survivors), 12, "node-2 seen dead"
    )
    assert all(statuses(n)["node-1"] == statuses(n)["node-3"] == "alive" for n in survivors)

    nodes[1].start()
    wait_for(lambda: all(statuses(n) == everyone for n in nodes), 3, "node-2 back to alive")
    assert membership(nodes[0])["node-2"]["incarnation"] > incarnation

    # SIGTERM stops a node, it does not take it out of the ring (that is `cluster
    # decommission`): the others see it dead at once, and its writes become hints.
    nodes[2].signal(signal.SIGTERM)
    assert nodes[2].wait_exit() == 0
    wait_for(lambda: all(statuses(n)["node-3"] == "dead" for n in nodes[:2]), 2, "node-3 seen dead")
    ring = get_json(nodes[0], "/api/ring")
    assert "node-3" in ring["members"]


def start_with_node_3_refused(node_factory: NodeFactory, **node_3_env: str) -> list[NodeProcess]:
    """Three nodes (N=2) where node-3 has `node_3_env`; once node-1 lists it incompatible."""
    nodes = peered_nodes(node_factory, REPLICATION_FACTOR="2")
    nodes[2].extra_env.update(node_3_env)
    for node in nodes:
        node.start()
    wait_for(
        lambda: (
            statuses(nodes[0]).get("node-2") == "alive"
            and statuses(nodes[0]).get("node-3") == "incompatible"
        ),
        5,
        "node-3 refused",
    )
    return nodes


def test_a_node_with_another_replication_factor_is_refused(node_factory: NodeFactory) -> None:
    nodes = start_with_node_3_refused(node_factory, REPLICATION_FACTOR="3")
    time.sleep(2)  # more rounds: it must stay refused, never merged
    assert statuses(nodes[0]) == {"node-1": "alive", "node-2": "alive", "node-3": "incompatible"}
    assert "REPLICATION_FACTOR" in membership(nodes[0])["node-3"]["reason"]
    assert set(statuses(nodes[2])) <= {"node-3", "node-1", "node-2"}
    assert statuses(nodes[2])["node-3"] == "alive"
    assert "node-1" not in statuses(nodes[2]) or statuses(nodes[2])["node-1"] == "incompatible"
    log = nodes[0].output() + nodes[1].output()
    assert log.count("refusing peer node-3") <= 2, "refusal must be logged once per node"


def test_nodes_with_other_key_or_value_limits_refuse_each_other(
    node_factory: NodeFactory,
) -> None:
    nodes = start_with_node_3_refused(node_factory, MAX_VALUE_BYTES="1000")
    reason = membership(nodes[0])["node-3"]["reason"]
    assert "MAX_KEY_BYTES/MAX_VALUE_BYTES 1024/1000 != ours 1024/1048576" in reason


def test_cli_cluster_members_table_and_json(node_factory: NodeFactory) -> None:
    nodes = peered_nodes(node_factory)
    for node in nodes:
        node.start()
    everyone = {"node-1": "alive", "node-2": "alive", "node-3": "alive"}
    wait_for(lambda: statuses(nodes[0]) == everyone, 5, "all alive")

    as_json = run_cli("cluster", "members", "--endpoint", nodes[0].endpoint, "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    members = json.loads(as_json.stdout)
    assert {node_id: m["status"] for node_id, m in members.items()} == everyone

    table = run_cli("cluster", "members", "--endpoint", nodes[1].endpoint)
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NODE", "STATUS", "GRPC", "GOSSIP", "INCARNATION", "LAST", "HEARD"]
    assert [line.split()[:3] for line in lines[1:]] == [
        [f"node-{i}", "alive", nodes[i - 1].endpoint] for i in (1, 2, 3)
    ]


def test_malformed_or_oversized_gossip_is_refused_and_changes_nothing(
    node_factory: NodeFactory,
) -> None:
    nodes = peered_nodes(node_factory)
    for node in nodes[:2]:
        node.start()
    wait_for(lambda: set(statuses(nodes[0])) == {"node-1", "node-2"}, 5, "two members")
    # Member ids, not statuses: a probe slowed by a busy machine may flap one to suspect.
    before = set(statuses(nodes[0]))
    url = f"http://{HOST}:{nodes[0].http_port}/gossip"
    member = {"id": "node-9", "grpc": "x:1", "gossip": "x:2", "status": "alive", "inc": 1}
    good = {"protocol": 1, "cluster": "a3redis", "replication_factor": 3, "sender": "node-9"}
    bad_bodies: list[bytes] = [
        b"not json",
        b"[]",
        json.dumps({**good, "members": "nope"}).encode(),
        json.dumps({**good, "members": [{**member, "status": "zombie"}]}).encode(),
        json.dumps({**good, "members": [{**member, "inc": -1}]}).encode(),
        json.dumps({**good, "sender": "node-8", "members": [member]}).encode(),
        json.dumps({**good, "protocol": 99, "members": [member]}).encode(),
    ]
    for body in bad_bodies:
        assert post(url, body)[0] == 400, body
    assert post_oversized(nodes[0].http_port, 5 * 1024 * 1024) == 413
    wrong_cluster = json.dumps({**good, "cluster": "other", "members": [member]}).encode()
    assert set(statuses(nodes[0])) == before
    code, answer = post(url, wrong_cluster)
    assert code == 409 and "cluster" in answer["error"]
    # Listed as incompatible, never merged.
    assert set(statuses(nodes[0])) == {*before, "node-9"}
    assert statuses(nodes[0])["node-9"] == "incompatible"
    assert nodes[0].health() is not None


def post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def post_oversized(port: int, size: int) -> int:
    """POST a `size`-byte body to /gossip, stopping as soon as the node answers; its status.

    The node refuses an oversized body before reading it and closes the connection: a
    client that keeps sending (urllib does) gets EPIPE instead of the answer.
    """
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(
            f"POST /gossip HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        chunk, sent = b" " * 65536, 0
        while sent < size:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sent += sock.send(chunk[: size - sent])
            except (BrokenPipeError, ConnectionResetError):
                break
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def test_peers_may_be_given_as_gossip_addresses(node_factory: NodeFactory) -> None:
    first = node_factory("g1", NODE_NUM="1").start()
    second = node_factory("g2", NODE_NUM="2", PEERS=f"{HOST}:{first.http_port}").start()
    both = {"node-1": "alive", "node-2": "alive"}
    wait_for(lambda: statuses(first) == statuses(second) == both, 5, "joined by gossip address")


JOIN_TIMEOUT = 5


def test_a_node_places_keys_only_once_it_knows_the_cluster_and_remembers_it_across_restarts(
    node_factory: NodeFactory,
) -> None:
    join_timeout = str(JOIN_TIMEOUT)
    first = node_factory("r1", NODE_NUM="1", REPLICATION_FACTOR="2", JOIN_TIMEOUT=join_timeout)
    second = node_factory("r2", NODE_NUM="2", REPLICATION_FACTOR="2", JOIN_TIMEOUT=join_timeout)
    first.extra_env["PEERS"] = second.endpoint
    second.extra_env["PEERS"] = first.endpoint
    first.start()
    # Its only peer is not up: it cannot know where keys belong, so it refuses them...
    refused = run_cli("put", "k", "v", "--endpoint", first.endpoint, "--consistency", "one")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "has not joined its cluster yet" in refused.stderr
    assert "nothing was written" in refused.stderr
    # ...but its own copy stays open to an operator.
    local = run_cli("get", "k", "--endpoint", first.endpoint, "--consistency", "local")
    assert local.returncode == 1, local.stderr  # not found: the refused write left nothing

    second.start()
    both = {"node-1": "alive", "node-2": "alive"}
    wait_for(lambda: statuses(first) == both == statuses(second), 5, "both alive")
    wait_for(lambda: ready(first) and ready(second), 5, "both founded the ring")
    put = run_cli("put", "k", "v1", "--endpoint", first.endpoint)
    assert put.returncode == 0, put.stderr

    # Both crash; node-1 comes back alone. It knows node-2 from its saved table at
    # once, but a ring may have changed while it was down: it coordinates only once
    # it has heard from a peer, or JOIN_TIMEOUT later on its saved table. Then RF=2
    # makes it a replica of every key, so a ONE write is its to take.
    first.kill()
    second.kill()
    first.start()
    assert set(statuses(first)) == {"node-1", "node-2"}
    # In process: on a busy machine a CLI process can take longer than JOIN_TIMEOUT to start.
    with RawClient(first) as client:
        code, details = call_refused(client.put, b"k", b"v2", pb.CONSISTENCY_ONE)
    assert code == grpc.StatusCode.UNAVAILABLE and "has not joined" in details, details
    wait_for(lambda: ready(first), JOIN_TIMEOUT + 3, "node-1 ready on its saved table")
    put = run_cli("put", "k", "v2", "--endpoint", first.endpoint, "--consistency", "one")
    assert put.returncode == 0, put.stderr
    second.start()
    wait_for(lambda: statuses(first) == both == statuses(second), 5, "both alive again")
    # The write node-2 missed reaches it (a hint, or repair).
    wait_for(
        lambda: (
            run_cli(
                "get", "k", "--endpoint", second.endpoint, "--consistency", "local"
            ).stdout.strip()
            == "v2"
        ),
        15,
        "node-2 holds the write it missed",
    )

    # Both stop cleanly: a stop is not a leave, each is still in the other's ring
    # (dead); node-1 comes back alone and, as after the crash, serves JOIN_TIMEOUT later.
    second.stop()
    first.stop()
    first.start()
    assert statuses(first)["node-2"] == "dead"
    # In process: on a busy machine a CLI process can take longer than JOIN_TIMEOUT to start.
    with RawClient(first) as client:
        code, details = call_refused(client.put, b"k", b"v3", pb.CONSISTENCY_ONE)
    assert code == grpc.StatusCode.UNAVAILABLE and "has not joined" in details, details
    second.start()
    wait_for(lambda: statuses(first) == both == statuses(second), 5, "both back")
    wait_for(lambda: ready(first), 5, "node-1 ready once it heard node-2")
    assert run_cli("put", "k", "v3", "--endpoint", first.endpoint).returncode == 0
