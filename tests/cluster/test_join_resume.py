"""A join survives a restart of the joining node and of its source, and a cold start of
nodes started apart forms one ring at once (issue 15)."""

from __future__ import annotations

import time
from typing import Any

import trio

from a3redis.client import Client
from a3redis.core.consistency import Consistency
from tests.conftest import NodeFactory
from tests.support.clusters import wait_all_alive_and_ready
from tests.support.history import assert_no_anomalies, check_reads, merge_histories
from tests.support.node_http import get_json, ready, statuses
from tests.support.processes import NodeProcess
from tests.support.waiting import wait_for
from tests.support.workload import Spec, run_workload

QUORUM = Consistency.QUORUM


def transition(node: NodeProcess) -> dict[str, Any]:
    body: dict[str, Any] = get_json(node, "/api/transition")
    return body


async def test_a_join_resumes_after_the_joiner_and_a_source_restart(
    node_factory: NodeFactory,
) -> None:
    # Slow copying, so that the restarts fall in the middle of it.
    env = {"REPLICATION_FACTOR": "2", "STREAM_MAX_KEYS_PER_SECOND": "1000", "FAILURE_TIMEOUT": "3"}
    env |= {"REQUEST_TIMEOUT": "1", "PEER_TIMEOUT": "1"}
    nodes = [node_factory(f"j{i}", NODE_NUM=str(i), **env) for i in range(1, 5)]
    founders = nodes[:3]
    for node in nodes:
        others = [f for f in founders if f is not node]
        node.extra_env["PEERS"] = ",".join(o.endpoint for o in others)
    for node in founders:
        node.start()
    wait_all_alive_and_ready(founders)
    keys = [f"key-{i:05d}".encode() for i in range(12_000)]
    async with Client.connect(founders[0].endpoint) as client:
        for start in range(0, len(keys), 1000):
            await client.batch_put([(k, k[::-1]) for k in keys[start : start + 1000]], QUORUM)

    joiner = nodes[3]
    joiner.start()
    wait_for(lambda: transition(joiner)["partitions_done"] > 300, 30, "node-4 copying")
    done_before = transition(joiner)["partitions_done"]
    joiner.kill()
    joiner.start()
    assert transition(joiner)["role"] == "joining"  # it resumes: its saved role
    wait_for(lambda: transition(joiner)["partitions_done"] > 0, 30, "node-4 copying again")
    # The partitions copied before the crash count: it goes on from there.
    assert transition(joiner)["partitions_done"] >= done_before
    # A source restarts in the middle, too: the copy waits for it and goes on.
    founders[1].kill()
    founders[1].start()
    wait_for(lambda: transition(joiner)["role"] == "normal", 60, "node-4 joined")
    after = transition(joiner)
    assert after["partitions_done"] == after["partitions"]

    # Every key reads back, and node-4 holds exactly the keys it owns.
    results, held = [], []
    async with Client.connect(nodes[0].endpoint) as client, Client.connect(joiner.endpoint) as own:
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            results += await client.batch_get(batch, QUORUM)
            held += await own.batch_get(batch, Consistency.LOCAL)
    assert [r.value for r in results] == [k[::-1] for k in keys]
    ring = get_json(nodes[0], "/api/ring")
    assert sorted(ring["members"]) == ["node-1", "node-2", "node-3", "node-4"]
    owned = [k for k, r in zip(keys, held, strict=True) if r.found]
    assert 0.4 * len(keys) < len(owned) < 0.6 * len(keys)
    # Since its restart it copied less than its share: not everything again.
    assert after["keys_streamed"] < len(owned) - 300, (after, len(owned))


async def test_five_nodes_started_two_seconds_apart_form_one_ring_and_reads_never_lie(
    node_factory: NodeFactory,
) -> None:
    nodes = [node_factory(f"c{i}", NODE_NUM=str(i), REPLICATION_FACTOR="3") for i in range(1, 6)]
    for node in nodes:
        node.extra_env["PEERS"] = ",".join(o.endpoint for o in nodes if o is not node)
    spec = Spec(
        client="c",
        local_host="127.0.0.1",
        endpoints=[nodes[0].endpoint],
        keys=[f"k{i}" for i in range(50)],
        duration=120.0,
        max_ops=20_000,
        workers=2,
        pause=0.01,
    )
    histories: list[Any] = []
    stop = trio.Event()

    async def load() -> None:
        histories.append(await run_workload(spec, stop))

    async with trio.open_nursery() as nursery:
        nodes[0].start()
        # Clients read and write through node-1 from the moment it is up.
        nursery.start_soon(load)
        for node in nodes[1:]:
            await trio.sleep(2.0)
            node.start(wait=False)
        await trio.to_thread.run_sync(wait_all_alive_and_ready, nodes, 30)
        formed_at = time.monotonic()
        await trio.sleep(3.0)  # and served for a while
        stop.set()
    history = merge_histories(histories)
    refused = [op for op in history if op.code == "UNAVAILABLE" and op.invoked < formed_at]
    served = [op for op in history if op.outcome == "ok"]
    assert refused and served, "requests were refused while the ring formed, then served"
    assert all("nothing was written" in op.message for op in refused)
    assert_no_anomalies(check_reads(history))
    # One ring at once: every node founded it, nothing was copied.
    for node in nodes:
        body = get_json(node, "/api/transition")
        assert (body["role"], body["keys_streamed"]) == ("normal", 0), body
        assert ready(node)
        assert sorted(get_json(node, "/api/ring")["members"]) == [f"node-{i}" for i in range(1, 6)]
    assert all(status == "alive" for status in statuses(nodes[0]).values())
