"""A node that dies or restarts costs no request a timeout (issue 19, item 4).

Real node processes: a peer restarted (SIGTERM or kill -9) is written to at
QUORUM through a coordinator that held a link to it, at once and several
times over (the first request over a stale link used to fail); and a node
killed under load fails the requests waiting on it at once, both in the
coordinators' peer links and in clients connected to it. PEER_TIMEOUT and
the client's timeout are long here, so any request that waited for one
shows as slow.
"""

from __future__ import annotations

import random

import trio

from a3redis.client import Client, ClientError
from a3redis.core.consistency import Consistency
from tests.conftest import NodeFactory
from tests.support.clusters import start_cluster
from tests.support.node_http import statuses
from tests.support.processes import NodeProcess
from tests.support.waiting import wait_for

QUORUM = Consistency.QUORUM
SLOW = {"PEER_TIMEOUT": "4", "REQUEST_TIMEOUT": "5"}
CLIENT_TIMEOUT = 5.0
# Well under PEER_TIMEOUT: a request that took this long waited for a timeout.
AT_ONCE = 2.0


def seen_alive_by(node: NodeProcess, observer: NodeProcess, node_id: str) -> None:
    node.wait_ready()
    wait_for(lambda: statuses(observer).get(node_id) == "alive", 10, f"{node_id} alive")


async def test_the_first_quorum_writes_after_a_peer_restarts_succeed(
    node_factory: NodeFactory,
) -> None:
    # RF 2: every key node-3 holds needs its acknowledgement at QUORUM.
    nodes = start_cluster(node_factory, 2, **SLOW)
    coordinator, restarted = nodes[0], nodes[2]
    keys = [b"restart-%d" % i for i in range(24)]
    async with Client.connect(coordinator.endpoint, route_by_key=False) as client:
        for key in keys:  # node-1 now holds a link to node-3
            await client.put(key, b"before", QUORUM)
        for round_number, stop in enumerate([NodeProcess.stop, NodeProcess.kill] * 2):
            stop(restarted)
            restarted.start()
            seen_alive_by(restarted, coordinator, "node-3")
            value = b"after-%d" % round_number
            for key in keys:
                started = trio.current_time()
                await client.put(key, value, QUORUM)
                assert trio.current_time() - started < AT_ONCE
            for key in keys:
                assert (await client.get(key, QUORUM)).value == value


async def test_a_node_killed_under_load_fails_no_request_by_timeout(
    node_factory: NodeFactory,
) -> None:
    nodes = start_cluster(node_factory, 3, **SLOW)
    victim = nodes[2]
    durations: list[tuple[str, float, str]] = []  # (client, seconds, outcome)
    killed = trio.Event()
    done = trio.Event()

    async def load(client: Client, name: str, seed: int) -> None:
        rng = random.Random(seed)
        while not done.is_set():
            # Each worker its own keys: no write loses last-write-wins to another's.
            key = b"load-%d-%d" % (seed, rng.randrange(50))
            started = trio.current_time()
            try:
                if rng.random() < 0.5:
                    await client.put(key, b"v", QUORUM)
                else:
                    await client.get(key, QUORUM)
                outcome = "ok"
            except ClientError as error:
                outcome = error.code
                await trio.sleep(0.01)  # a refused connection fails fast: do not spin
            durations.append((name, trio.current_time() - started, outcome))

    async with (
        Client.connect(nodes[0].endpoint, CLIENT_TIMEOUT, route_by_key=False) as through_peer,
        Client.connect(victim.endpoint, CLIENT_TIMEOUT, route_by_key=False) as direct,
        trio.open_nursery() as nursery,
    ):
        for worker in range(8):
            nursery.start_soon(load, through_peer, "coordinator", worker)
        for worker in range(4):
            nursery.start_soon(load, direct, "victim", 100 + worker)
        await trio.sleep(1.5)
        victim.kill()
        killed.set()
        await trio.sleep(2.0)
        done.set()

    slow = [entry for entry in durations if entry[1] >= AT_ONCE]
    assert not slow, slow
    coordinated = [outcome for name, _, outcome in durations if name == "coordinator"]
    # Two replicas of three remain: QUORUM keeps working through node-1.
    assert set(coordinated) == {"ok"}, {o: coordinated.count(o) for o in set(coordinated)}
    direct_outcomes = {outcome for name, _, outcome in durations if name == "victim"}
    assert direct_outcomes == {"ok", "UNAVAILABLE"}, direct_outcomes
