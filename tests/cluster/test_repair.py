"""Merkle anti-entropy between real node processes."""

from __future__ import annotations

import pytest
import trio

from a3redis.client import Client
from a3redis.core.consistency import Consistency
from tests.conftest import NodeFactory
from tests.support.clusters import local_copies, start_cluster
from tests.support.node_http import statuses
from tests.support.processes import NodeProcess, run_cli
from tests.support.waiting import wait_for

LOCAL, ONE = Consistency.LOCAL, Consistency.ONE


async def local_view(node: NodeProcess, keys: list[bytes]) -> list[bytes | None]:
    async with Client.connect(node.endpoint) as client:
        return [r.value for r in await client.batch_get(keys, LOCAL)]


@pytest.mark.parametrize("size", [2, 3])
async def test_a_replica_that_missed_writes_and_deletes_is_repaired_within_one_interval(
    node_factory: NodeFactory, size: int
) -> None:
    # Hints would also repair this; a zero window turns them off so only anti-entropy can.
    nodes = start_cluster(
        node_factory, size, size, SYNC_INTERVAL="1", FAILURE_TIMEOUT="2", HINT_WINDOW="0"
    )
    keys = [f"k{i:03d}".encode() for i in range(300)]
    async with Client.connect(nodes[0].endpoint) as client:
        await client.batch_put([(k, b"old") for k in keys], Consistency.ALL)
    nodes[-1].stop()
    last = f"node-{size}"
    wait_for(lambda: statuses(nodes[0])[last] == "dead", 5, f"{last} stopped")
    async with Client.connect(nodes[0].endpoint) as client:
        for key in keys[:100]:
            await client.put(key, b"new", ONE)
        for key in keys[100:150]:
            await client.delete(key, ONE)
        await client.batch_put([(f"fresh{i}".encode(), b"f") for i in range(50)], ONE)
    nodes[-1].start()
    everything = keys + [f"fresh{i}".encode() for i in range(50)]
    expected = [b"new"] * 100 + [None] * 50 + [b"old"] * 150 + [b"f"] * 50

    async def converged() -> bool:
        views = [await local_view(node, everything) for node in nodes]
        return all(view == expected for view in views)

    with trio.fail_after(1 * 1.2 + 8):  # one interval (with jitter) plus start-up and transfer
        while not await converged():
            await trio.sleep(0.2)
    # The round logs its MISMATCH line once its transfers are done.
    wait_for(lambda: "[anti-entropy] MISMATCH" in "".join(n.output() for n in nodes), 5, "logged")

    # Later rounds never bring the deleted keys back.
    for node in nodes:
        async with Client.connect(node.endpoint) as client:
            await client.repair(wait=True)
    assert [await local_view(node, everything) for node in nodes] == [expected] * size


async def test_a_round_between_identical_replicas_moves_only_roots(
    node_factory: NodeFactory,
) -> None:
    nodes = start_cluster(node_factory, 2, SYNC_INTERVAL="3600")
    async with Client.connect(nodes[0].endpoint) as client:
        await client.batch_put(
            [(f"k{i}".encode(), b"v" * 100) for i in range(2000)], Consistency.ALL
        )
        reports = await client.repair(wait=True)
    assert {r["peer"] for r in reports} == {"node-2", "node-3"}
    for report in reports:
        assert report["skipped"] == ""
        assert report["tree_nodes"] == 1  # the root, nothing below
        assert report["leaves"] == report["keys_pulled"] == report["keys_pushed"] == 0
        assert report["bytes_sent"] + report["bytes_received"] < 200


async def test_repair_fixes_one_divergent_key_by_moving_only_it(
    node_factory: NodeFactory,
) -> None:
    nodes = start_cluster(node_factory, 3, SYNC_INTERVAL="3600")
    keys = [f"k{i}".encode() for i in range(2000)]
    async with Client.connect(nodes[0].endpoint) as client:
        await client.batch_put([(k, b"v") for k in keys], Consistency.ALL)
        await client.put(b"k7", b"changed-here-only", LOCAL)
    cli = run_cli("repair", "--wait", "--endpoint", nodes[0].endpoint)
    assert cli.returncode == 0, cli.stderr
    assert "pushed 1" in cli.stdout, cli.stdout
    assert [await local_view(n, [b"k7"]) for n in nodes] == [[b"changed-here-only"]] * 3
    assert await local_copies(nodes, keys) == [3] * len(keys)


async def test_tombstones_are_purged_only_after_every_replica_holds_them(
    node_factory: NodeFactory,
) -> None:
    nodes = start_cluster(
        node_factory,
        3,
        SYNC_INTERVAL="1",
        FAILURE_TIMEOUT="2",
        HINT_WINDOW="0",
        TOMBSTONE_GRACE="3",
    )
    keys = [f"gone-{i}".encode() for i in range(40)]
    async with Client.connect(nodes[0].endpoint) as client:
        await client.batch_put([(k, b"old") for k in keys], Consistency.ALL)
    nodes[2].kill()  # node-3 keeps the old values and misses the deletes
    async with Client.connect(nodes[0].endpoint) as client:
        for key in keys:
            await client.delete(key, Consistency.QUORUM)
    await trio.sleep(5)  # past the grace period: still no purge, node-3 never confirmed
    for node in nodes[:2]:
        async with Client.connect(node.endpoint) as client:
            held = await client.batch_get(keys, LOCAL)
            assert all(not r.found and r.version is not None for r in held), "purged too early"

    nodes[2].start()

    async def purged_everywhere() -> bool:
        done = True
        for node in nodes:
            async with Client.connect(node.endpoint) as client:
                held = await client.batch_get(keys, LOCAL)
            if node is not nodes[2]:  # node-3 shows its stale values until repaired
                assert not any(r.found for r in held), f"a deleted key came back on {node.endpoint}"
            done = done and all(not r.found and r.version is None for r in held)
        return done

    with trio.fail_after(20):
        while not await purged_everywhere():
            await trio.sleep(0.3)
    # More rounds bring nothing back, on any node.
    for node in nodes:
        async with Client.connect(node.endpoint) as client:
            await client.repair(wait=True)
    assert await purged_everywhere()
    for node in nodes:
        async with Client.connect(node.endpoint) as client:
            assert not any(r.found for r in await client.batch_get(keys, Consistency.ALL))
