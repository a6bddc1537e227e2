"""Quorum replication across three real node processes."""

from __future__ import annotations

import signal

import pytest
import trio

from a3redis.client import Client, ClientError
from a3redis.core.consistency import Consistency
from tests.conftest import NodeFactory
from tests.support.clusters import local_copies, start_cluster
from tests.support.node_http import metric, statuses
from tests.support.processes import run_cli
from tests.support.waiting import wait_for

LOCAL = Consistency.LOCAL


@pytest.mark.parametrize("factor", [2, 3])
async def test_every_key_is_stored_on_exactly_n_nodes(
    node_factory: NodeFactory, factor: int
) -> None:
    nodes = start_cluster(node_factory, factor)
    keys = [f"key-{i}".encode() for i in range(1000)]
    async with Client.connect(nodes[0].endpoint) as client:
        for start in range(0, 1000, 100):
            await client.batch_put([(k, b"v-" + k) for k in keys[start : start + 100]])
        for key in keys[:50]:
            assert (await client.get(key)).value == b"v-" + key
    assert await local_copies(nodes, keys) == [factor] * len(keys)


async def test_read_your_writes_through_every_other_node(node_factory: NodeFactory) -> None:
    nodes = start_cluster(node_factory, 3)
    for i in range(30):
        writer = nodes[i % 3]
        key, value = f"ryw-{i}".encode(), f"value-{i}".encode()
        async with Client.connect(writer.endpoint) as client:
            await client.put(key, value, Consistency.QUORUM)
        for reader in nodes:
            if reader is not writer:
                async with Client.connect(reader.endpoint) as client:
                    assert (await client.get(key, Consistency.QUORUM)).value == value


async def test_a_read_repairs_a_stale_replica(node_factory: NodeFactory) -> None:
    nodes = start_cluster(node_factory, 3)
    async with Client.connect(nodes[0].endpoint) as client:
        await client.put(b"k", b"old", Consistency.ALL)
        # Only node-1's own copy gets the newer value: the other two are stale.
        await client.put(b"k", b"new", LOCAL)
    async with Client.connect(nodes[1].endpoint) as client:
        assert (await client.get(b"k", LOCAL)).value == b"old"
        assert (await client.get(b"k", Consistency.ALL)).value == b"new"

    async def all_new() -> bool:
        for node in nodes:
            async with Client.connect(node.endpoint) as client:
                if (await client.get(b"k", LOCAL)).value != b"new":
                    return False
        return True

    with trio.fail_after(5):
        while not await all_new():
            await trio.sleep(0.05)


async def test_one_node_down_quorum_still_works_two_down_fails_fast(
    node_factory: NodeFactory,
) -> None:
    nodes = start_cluster(node_factory, 3, FAILURE_TIMEOUT="2")
    nodes[2].kill()
    async with Client.connect(nodes[0].endpoint) as client:
        for i in range(20):
            await client.put(f"one-down-{i}".encode(), b"v", Consistency.QUORUM)
            assert (await client.get(f"one-down-{i}".encode(), Consistency.QUORUM)).found

    nodes[1].kill()
    wait_for(
        lambda: statuses(nodes[0])["node-2"] == statuses(nodes[0])["node-3"] == "dead",
        10,
        "two dead",
    )
    async with Client.connect(nodes[0].endpoint) as client:
        with pytest.raises(ClientError) as refused:
            await client.put(b"two-down", b"v", Consistency.QUORUM)
        assert refused.value.code == "UNAVAILABLE"
        assert "needs 2 replicas, 1 reachable" in refused.value.message
        assert not (await client.get(b"two-down", LOCAL)).found
        assert (await client.get(b"one-down-0", Consistency.ONE)).found


async def test_a_level_the_cluster_can_never_meet_is_a_failed_precondition(
    node_factory: NodeFactory,
) -> None:
    node = node_factory("solo", REPLICATION_FACTOR="3").start()
    async with Client.connect(node.endpoint) as client:
        with pytest.raises(ClientError) as refused:
            await client.put(b"k", b"v", Consistency.ALL)
        assert refused.value.code == "FAILED_PRECONDITION"
        assert "ALL needs 3 of 3 replicas but the ring has 1 node" in refused.value.message
        assert not (await client.get(b"k", LOCAL)).found
        await client.put(b"k", b"v", Consistency.ONE)
        assert (await client.get(b"k", Consistency.ONE)).value == b"v"


async def test_the_client_sends_each_key_to_its_replicas(node_factory: NodeFactory) -> None:
    nodes = start_cluster(node_factory, 1)
    keys = [f"routed-{i}".encode() for i in range(30)]
    async with Client.connect(nodes[0].endpoint) as client:
        for key in keys:
            await client.put(key, b"v" + key)
        members = {node_id: status for node_id, _, status in await client.topology()}
        assert members == {"node-1": "alive", "node-2": "alive", "node-3": "alive"}
        # With one replica per key, only routing by key can still reach the
        # keys of node-2 and node-3 once the only endpoint we gave is gone.
        nodes[0].kill()
        owners = await local_copies(nodes[1:], keys)
        reachable = [key for key, count in zip(keys, owners, strict=True) if count == 1]
        assert 10 <= len(reachable) < 30
        for key in reachable:
            assert (await client.get(key, Consistency.ONE)).value == b"v" + key


async def test_cluster_remove_takes_a_dead_node_out_of_the_ring(node_factory: NodeFactory) -> None:
    nodes = start_cluster(node_factory, 2, FAILURE_TIMEOUT="2")
    refused = run_cli("cluster", "remove", "node-3", "--endpoint", nodes[0].endpoint)
    assert refused.returncode == 3 and "only a dead node can be removed" in refused.stderr

    nodes[2].kill()
    wait_for(lambda: statuses(nodes[0])["node-3"] == "dead", 10, "node-3 dead")
    removed = run_cli("cluster", "remove", "node-3", "--endpoint", nodes[0].endpoint)
    assert removed.returncode == 0, removed.stderr
    wait_for(
        lambda: statuses(nodes[0])["node-3"] == statuses(nodes[1])["node-3"] == "left",
        5,
        "node-3 removed everywhere",
    )
    # With node-3 out of the ring, every key's two replicas are node-1 and node-2.
    keys = [f"after-{i}".encode() for i in range(50)]
    async with Client.connect(nodes[0].endpoint) as client:
        await client.batch_put([(k, b"v") for k in keys], Consistency.ALL)
    assert await local_copies(nodes[:2], keys) == [2] * len(keys)


async def test_writes_for_a_dead_replica_are_hinted_and_delivered_after_restart(
    node_factory: NodeFactory,
) -> None:
    nodes = start_cluster(node_factory, 3, FAILURE_TIMEOUT="2")
    nodes[2].kill()
    keys = [f"hinted-{i}".encode() for i in range(100)]
    async with Client.connect(nodes[0].endpoint) as client:
        for key in keys:
            await client.put(key, b"v-" + key, Consistency.QUORUM)
    hints_dir = nodes[0].data_dir / "hints"
    assert (hints_dir / "node-3.hints").exists() or (
        nodes[1].data_dir / "hints" / "node-3.hints"
    ).exists()

    nodes[2].start()
    restarted = trio.current_time()

    async def delivered() -> bool:
        async with Client.connect(nodes[2].endpoint) as client:
            return all(r.found for r in await client.batch_get(keys, LOCAL))

    with trio.fail_after(5):
        while not await delivered():
            await trio.sleep(0.1)
    assert trio.current_time() - restarted < 5
    wait_for(lambda: not (hints_dir / "node-3.hints").exists(), 5, "hints file emptied")
    assert "delivered" in nodes[0].output() + nodes[1].output()


async def test_a_scan_sees_every_key_once_and_no_deleted_one(node_factory: NodeFactory) -> None:
    nodes = start_cluster(node_factory, 2)
    keys = [f"s{i:04d}".encode() for i in range(700)]
    async with Client.connect(nodes[0].endpoint) as client:
        await client.batch_put([(k, k) for k in keys[:500]])
        await client.batch_put([(k, k) for k in keys[500:]])
        for key in keys[::7]:
            await client.delete(key)
        expected = [k for i, k in enumerate(keys) if i % 7]
        # Through every node: every key appears once, in order, across several pages.
        for node in nodes:
            async with Client.connect(node.endpoint) as other:
                found = await other.scan(prefix=b"s")
                assert [e.key for e in found] == expected
                assert all(e.value == e.key for e in found)
        window = await client.scan(start=b"s0100", end=b"s0200", limit=20)
        assert [e.key for e in window] == [k for k in expected if k >= b"s0100"][:20]
        # LOCAL shows only what this node holds itself: about 2/3 of the keys.
        local = await client.scan(consistency=LOCAL)
        assert 0 < len(local) < len(expected)


async def test_a_link_notices_an_unresponsive_peer_by_keepalive_and_recovers(
    node_factory: NodeFactory,
) -> None:
    nodes = start_cluster(node_factory, 3, FAILURE_TIMEOUT="30")
    async with Client.connect(nodes[0].endpoint, route_by_key=False) as client:
        await client.put(b"k", b"1", Consistency.ALL)  # node-1 now has links to both peers
        name = "a3redis_peer_keepalive_failures_total"
        assert metric(nodes[0], name) == 0
        nodes[2].signal(signal.SIGSTOP)
        try:
            # No request is waiting on node-3: only the keepalive can find it silent.
            wait_for(lambda: metric(nodes[0], name) >= 1, 8, "a failed keepalive")
        finally:
            nodes[2].signal(signal.SIGCONT)
        with trio.fail_after(5):
            await client.put(b"k", b"2", Consistency.ALL)
        assert (await client.get(b"k", Consistency.ALL)).value == b"2"
