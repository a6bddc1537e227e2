"""The cluster secret on real node processes: members serve, outsiders change nothing.

One cluster of three nodes with a secret serves QUORUM requests; a node with
another secret is never merged; Replica calls without the secret's signature
are UNAUTHENTICATED; operator requests need it; a captured gossip message is
refused when replayed, within the window or after it; the hostile gossip bodies
(tests/support/hostile_gossip.py) are refused unread. A second cluster rotates
its secret by a rolling restart under load, with no failed request.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import purerpc
import pytest
import trio

from a3redis.api.replica_calls import ReplicaCalls
from a3redis.client import Client, ClientError
from a3redis.cluster.peer_auth import PeerGuard, operator_headers
from a3redis.core.consistency import Consistency
from a3redis.core.hlc import Version
from a3redis.core.peer_auth import NONCE_BYTES, Keyring, PeerAuth, Secret, replay_window_ms
from a3redis.core.record import Record
from a3redis.core.validation import Limits
from a3redis.net.address import Address
from a3redis.net.channels import ChannelPool
from tests.conftest import NodeFactory
from tests.support.clusters import peered_nodes, start_peered, wait_all_alive_and_ready
from tests.support.hostile_gossip import HOSTILE
from tests.support.node_http import counters, membership, statuses
from tests.support.processes import HOST, NodeProcess
from tests.support.waiting import wait_for

QUORUM = Consistency.QUORUM
SECRET = "the-cluster-secret-of-these-tests-0123456789"
OTHER = "another-secret-that-no-member-holds-0123456789"
EVERYONE = {"node-1": "alive", "node-2": "alive", "node-3": "alive"}
FAST = {
    "REPLICATION_FACTOR": "3",
    "GOSSIP_INTERVAL": "0.3",
    "FAILURE_TIMEOUT": "3",
    "SHUTDOWN_GRACE": "0.5",
}


def signer(secret: str, node_id: str = "node-1") -> PeerGuard:
    return PeerGuard(
        PeerAuth(Keyring(Secret(secret.encode())), node_id), lambda: time.time_ns() // 10**6
    )


def post(node: NodeProcess, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://{node.gossip}{path}",
        data=body,
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def refused(node: NodeProcess) -> dict[tuple[str, str], float]:
    """The node's a3redis_peer_auth_refused_total, by (channel, reason)."""
    return {
        (dict(labels)["channel"], dict(labels)["reason"]): value
        for labels, value in counters(node, "a3redis_peer_auth_refused").items()
    }


def gossip_of(sender: str, incarnation: int, grpc: str, gossip: str) -> bytes:
    """A gossip message in which `sender` says it is alive (what a member sends)."""
    me = {"id": sender, "grpc": grpc, "gossip": gossip, "status": "alive", "inc": incarnation}
    body = {
        "protocol": 1,
        "cluster": "a3redis",
        "replication_factor": 3,
        "sender": sender,
        "members": [me],
    }
    return json.dumps(body).encode()


async def test_members_serve_and_outsiders_change_nothing(node_factory: NodeFactory) -> None:
    nodes = start_peered(peered_nodes(node_factory, CLUSTER_SECRET=SECRET, **FAST), 15)
    async with Client.connect([n.endpoint for n in nodes]) as client:
        for index in range(20):
            await client.put(b"k%d" % index, b"v%d" % index, QUORUM)
        for index in range(20):
            assert (await client.get(b"k%d" % index, QUORUM)).value == b"v%d" % index

    # A node with another secret: its gossip is refused, it is never merged.
    intruder = node_factory(
        "n4", NODE_NUM="4", CLUSTER_SECRET=OTHER, PEERS=nodes[0].endpoint, **FAST
    )
    intruder.start()
    wait_for(
        lambda: refused(nodes[0]).get(("gossip", "bad_signature"), 0) >= 2,
        10,
        "the intruder's gossip refused",
    )
    assert "node-4" not in membership(nodes[0])
    assert all(statuses(node) == EVERYONE for node in nodes)
    assert "refused gossip from 127.0.0.1 claiming to be node-4: bad_signature" in nodes[0].output()

    # Replica calls signed with another secret, or not at all, are UNAUTHENTICATED.
    record = Record(b"k0", b"forged", Version(time.time_ns() // 10**6 + 1, 0, "node-4"))
    async with ChannelPool.open() as channels:
        target = Address.parse(nodes[1].endpoint)
        for guard in (signer(OTHER, "node-4"), None):
            calls = ReplicaCalls(channels, target, "node-4", guard)
            with pytest.raises(purerpc.RpcFailedError) as caught:
                await calls.apply([record])
            assert caught.value.status.status_code.name == "UNAUTHENTICATED"
            with pytest.raises(purerpc.RpcFailedError):
                await calls.read([b"k0"])
        # Signed with the secret, the same call is taken (so the refusal was the secret's).
        member = ReplicaCalls(channels, target, "node-1", signer(SECRET, "node-1"))
        assert (await member.read([b"k1"]))[0] is not None
    counts = refused(nodes[1])
    assert counts[("Apply", "bad_signature")] >= 1
    assert counts[("Apply", "missing")] >= 1
    async with Client.connect([n.endpoint for n in nodes]) as client:
        assert (await client.get(b"k0", QUORUM)).value == b"v0"

    # Operator requests need the secret's signature: the CLI's, or a member's.
    path = "/api/members/node-3/remove"
    assert post(nodes[0], path, b"", {})[0] == 401
    wrong = operator_headers({"CLUSTER_SECRET": OTHER}, "remove:node-3")
    assert post(nodes[0], path, b"", wrong)[0] == 401
    # Signed for another node id: no use either.
    assert (
        post(nodes[0], path, b"", operator_headers({"CLUSTER_SECRET": SECRET}, "remove:x"))[0]
        == 401
    )
    assert post(nodes[0], "/api/members/node-3/decommission", b"", {})[0] == 401
    # Signed, it reaches the operation (which refuses to remove a live member: 409).
    signed = operator_headers({"CLUSTER_SECRET": SECRET}, "remove:node-3")
    assert post(nodes[0], path, b"", signed)[0] == 409
    assert post(nodes[0], path, b"", signed)[0] == 403  # a replay
    # The CLI signs when the secret is in its environment.
    for env, expected in (({}, "UNAUTHENTICATED"), ({"CLUSTER_SECRET": SECRET}, "no member")):
        cli = [sys.executable, "-m", "a3redis.tools.cli", "cluster", "remove", "node-77"]
        with trio.fail_after(30):
            result = await trio.run_process(
                [*cli, "--endpoint", nodes[0].endpoint, "--no-wait"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={**os.environ, **env},
            )
        stderr = result.stderr.decode()
        assert result.returncode == 3 and expected in stderr, stderr
    assert all(statuses(node) == EVERYONE for node in nodes)

    # A captured gossip message: taken once, refused when replayed within the window or
    # after it (here: stamped the window and a second ago; the window of nodes with the
    # default MAX_CLOCK_SKEW), and nothing changes.
    own = membership(nodes[1])["node-2"]
    body = gossip_of("node-2", own["incarnation"], own["addr"], own["gossip_addr"])
    captured = signer(SECRET, "node-2").headers("gossip", body)
    assert post(nodes[0], "/gossip", body, captured)[0] == 200
    assert post(nodes[0], "/gossip", body, captured)[0] == 403
    phantom = gossip_of("node-9", 1, f"{HOST}:1", f"{HOST}:2")
    window = replay_window_ms(Limits().max_clock_skew_ms)
    old = PeerAuth(Keyring(Secret(SECRET.encode())), "node-9").sign(
        "gossip", phantom, time.time_ns() // 10**6 - window - 1000, bytes(NONCE_BYTES)
    )
    stale = {
        "x-a3-sender": old.sender,
        "x-a3-timestamp": old.timestamp_ms,
        "x-a3-nonce": old.nonce,
        "x-a3-signature": old.signature,
    }
    assert post(nodes[0], "/gossip", phantom, stale)[0] == 403
    counts = refused(nodes[0])
    assert counts[("gossip", "replayed")] == 1
    assert counts[("gossip", "out_of_window")] == 1

    # The hostile bodies, unsigned: refused before they are read, whatever they hold.
    for hostile, _ in HOSTILE[:40]:
        if len(hostile) < 65536:
            assert post(nodes[2], "/gossip", hostile, {})[0] == 401
    assert refused(nodes[2])[("gossip", "missing")] >= 1
    assert "node-9" not in membership(nodes[0])
    assert all(statuses(node) == EVERYONE for node in nodes)
    async with Client.connect([n.endpoint for n in nodes]) as client:
        await client.put(b"after", b"yes", QUORUM)
        assert (await client.get(b"after", QUORUM)).value == b"yes"


async def every_link_up(nodes: list[NodeProcess], within: float = 15) -> None:
    """Wait until a write at ALL succeeds through every node: each has its links to the
    others back after a restart (a rolling restart has to wait for that with or without
    a secret: the next node to stop would otherwise leave a write one replica short)."""
    with trio.fail_after(within):
        for node in nodes:
            async with Client.connect(node.endpoint, route_by_key=False) as client:
                while True:
                    try:
                        await client.put(b"settle", b"x", Consistency.ALL)
                        break
                    except ClientError:
                        await trio.sleep(0.2)


async def test_a_rolling_rotation_under_load_fails_no_request(node_factory: NodeFactory) -> None:
    """The second half of a rotation (README, "Security"): every node already accepts the
    new secret beside the old one; each is restarted in turn to sign with the new one.

    The load runs in every mixed state (some nodes signing with the old secret, some
    with the new) and pauses while a node is down: a request that a node's restart
    fails is a matter of rolling restarts, with or without a secret, not of the secret.
    """
    new, old = SECRET, OTHER
    nodes = start_peered(
        peered_nodes(node_factory, CLUSTER_SECRET=old, CLUSTER_SECRET_PREVIOUS=new, **FAST), 15
    )
    endpoints = [n.endpoint for n in nodes]
    running = trio.Event()
    running.set()
    idle = trio.Event()  # set while the load waits for `running`
    done = False
    served = 0

    async def load() -> None:
        nonlocal served
        # Bounded: at most 5,000 request pairs, one per 20 ms, until the rotation is done.
        while not done and served < 5000:
            if not running.is_set():
                idle.set()
                await running.wait()
            # A new connection each time (a client's channel to a node that restarted
            # is only found broken by a timeout), through each node in turn.
            endpoint = endpoints[served % len(endpoints)]
            async with Client.connect(endpoint, route_by_key=False) as client:
                key = b"rot-%d" % served
                await client.put(key, b"v", QUORUM)
                assert (await client.get(key, QUORUM)).found
            served += 1
            await trio.sleep(0.02)

    async def served_at_least(count: int) -> None:
        with trio.fail_after(20):
            while served < count:
                await trio.sleep(0.02)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(load)
        for node in nodes:
            await served_at_least(served + 10)  # under load in this mixed state
            idle = trio.Event()
            running = trio.Event()
            with trio.fail_after(10):
                await idle.wait()
            node.extra_env.update(CLUSTER_SECRET=new, CLUSTER_SECRET_PREVIOUS=old)
            await trio.to_thread.run_sync(node.stop)
            await trio.to_thread.run_sync(node.start)
            await trio.to_thread.run_sync(wait_all_alive_and_ready, nodes, 15)
            await every_link_up(nodes)
            running.set()
        await served_at_least(served + 10)  # and once every node signs with the new one
        done = True
    assert served >= 40
    assert all(statuses(node) == EVERYONE for node in nodes)
    # Nothing was refused on the way: each signature was accepted by each node.
    assert all(not refused(node) for node in nodes)
