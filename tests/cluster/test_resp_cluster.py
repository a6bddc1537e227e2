"""Three real node processes speaking Redis: one keyspace through every node's RESP port
and gRPC, the emulated Redis Cluster map, and cluster clients (issue #16).

One cluster for the module (RF 3, QUORUM): the tests only add keys of their own.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import trio
from redis.cluster import RedisCluster

from a3redis.client import Client
from a3redis.core.redis_cluster import CLUSTER_SLOTS, key_slot
from tests.conftest import NodeFactory
from tests.support.clusters import start_cluster, start_peered
from tests.support.node_http import metrics_text, parse_samples
from tests.support.processes import NodeProcess
from tests.support.system_tools import system_command
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProcess]]:
    directory = tmp_path_factory.mktemp("resp-cluster")
    env = {"REPLICATION_FACTOR": "3", "FSYNC": "no"}
    made = [
        NodeProcess(directory / f"n{i}-data", directory / f"n{i}.log", {**env, "NODE_NUM": str(i)})
        for i in (1, 2, 3)
    ]
    for node in made:
        node.extra_env["PEERS"] = ",".join(other.endpoint for other in made if other is not node)
    try:
        yield start_peered(made)
    finally:
        for node in made:
            node.kill()


def connected(node: NodeProcess, protocol: int = 3) -> Any:
    """A redis-py client of one node (typed Any: redis-py's annotations mix sync and async)."""
    return redis.Redis(port=node.resp_port, protocol=protocol, socket_timeout=10)


def cli(node: NodeProcess, *args: str) -> str:
    command = [system_command("redis-cli"), "-p", str(node.resp_port), *args]
    done = subprocess.run(command, capture_output=True, timeout=30, check=False)
    return done.stdout.decode("utf-8", "backslashreplace")


def resp_commands(node: NodeProcess, command: str) -> float:
    """How many `command`s the node answered without an error."""
    samples = parse_samples(metrics_text(node))
    key = ("a3redis_resp_commands_total", (("command", command), ("result", "ok")))
    return samples.get(key, 0.0)


def gossip_spread(nodes: list[NodeProcess]) -> None:
    """Wait (bounded) until every node's CLUSTER SLOTS lists the three RESP ports."""
    ports = {node.resp_port for node in nodes}

    def listed_everywhere() -> bool:
        for node in nodes:
            with connected(node, 2) as r:
                slots = r.execute_command("CLUSTER", "SLOTS")
            if {entry[2][1] for entry in slots} != ports:
                return False
        return True

    wait_for(listed_everywhere, 15, "every node's CLUSTER SLOTS lists every RESP port")


async def test_a_key_set_through_one_node_is_read_through_another_and_over_grpc(
    nodes: list[NodeProcess],
) -> None:
    first, second, third = nodes
    assert cli(first, "SET", "written:resp", "through node-1") == "OK\n"
    assert cli(second, "GET", "written:resp") == "through node-1\n"
    async with Client.connect(third.endpoint) as client:
        assert (await client.get(b"written:resp")).value == b"through node-1"
        await client.put(b"written:grpc", b"\x00over\r\ngrpc")
    for node in nodes:
        with connected(node) as r:
            assert r.get("written:grpc") == b"\x00over\r\ngrpc", node.endpoint
    assert cli(third, "DEL", "written:resp") == "1\n"
    async with Client.connect(first.endpoint) as client:
        assert not (await client.get(b"written:resp")).found


def test_an_expiry_set_through_one_node_holds_through_every_node(nodes: list[NodeProcess]) -> None:
    first, second, third = nodes
    with connected(first) as r:
        assert r.set("expiring:a", "v", ex=100) is True
        assert r.set("expiring:short", "v", px=300) is True
        pipe = r.pipeline(transaction=False)
        for i in range(20):
            pipe.set(f"expiring:{i}", "v")
        for i in range(20):
            pipe.expire(f"expiring:{i}", 200 + i)  # one read, then one write, at QUORUM
        assert pipe.execute() == [True] * 40
    with connected(second) as r:
        assert r.ttl("expiring:a") == 100
        assert [r.ttl(f"expiring:{i}") for i in range(20)] == [200 + i for i in range(20)]
        assert r.expire("expiring:a", 50, lt=True) is True
    with connected(third) as r:
        assert 49_000 < r.pttl("expiring:a") <= 50_000
        assert r.persist("expiring:a") is True
    assert cli(first, "TTL", "expiring:a") == "-1\n"
    time.sleep(0.35)
    for node in nodes:
        with connected(node) as r:
            assert (r.get("expiring:short"), r.ttl("expiring:short")) == (None, -2), node.endpoint


def test_keys_written_through_one_node_are_listed_through_every_node(
    nodes: list[NodeProcess],
) -> None:
    with connected(nodes[0]) as r:
        r.mset({f"listed:{i}": i for i in range(300)})
        r.delete("listed:7")
    expected = sorted(f"listed:{i}" for i in range(300) if i != 7)
    for node in nodes:
        assert sorted(cli(node, "--scan", "--pattern", "listed:*").split()) == expected
        assert sorted(cli(node, "KEYS", "listed:*").split()) == expected
        with connected(node, 2) as r:
            assert len(list(r.scan_iter(match="listed:?", count=3))) == 9


async def test_cluster_slots_shards_and_nodes_list_all_three_nodes(
    nodes: list[NodeProcess],
) -> None:
    await trio.to_thread.run_sync(gossip_spread, nodes)
    ports = sorted(node.resp_port for node in nodes)
    for node in nodes:
        with connected(node, 2) as r:
            slots = r.execute_command("CLUSTER", "SLOTS")
            shards = r.execute_command("CLUSTER", "SHARDS")
            listing = r.execute_command("CLUSTER", "NODES")
            myid = r.execute_command("CLUSTER", "MYID")
        # SLOTS: one contiguous range per node, together every slot, each once.
        ranges = sorted((start, end) for start, end, *_ in slots)
        assert ranges[0][0] == 0 and ranges[-1][1] == CLUSTER_SLOTS - 1
        assert all(ranges[i][1] + 1 == ranges[i + 1][0] for i in range(len(ranges) - 1))
        assert sorted(entry[2][1] for entry in slots) == ports
        # SHARDS: a shard per node, each a primary on its RESP port.
        shard_ports = []
        for shard in shards:
            fields = dict(zip(*[iter(shard)] * 2, strict=True))
            (member,) = fields[b"nodes"]
            described = dict(zip(*[iter(member)] * 2, strict=True))
            assert described[b"role"] == b"master" and described[b"health"] == b"online"
            shard_ports.append(described[b"port"])
        assert sorted(shard_ports) == ports
        # NODES: a line per node, this one marked myself, with its address and slots.
        lines = listing.decode().strip().split("\n")
        assert len(lines) == 3
        mine = [line for line in lines if "myself" in line]
        assert len(mine) == 1 and mine[0].split()[0] == myid.decode()
        assert f"127.0.0.1:{node.resp_port}@" in mine[0]
        assert sorted(int(line.split()[1].split(":")[1].split("@")[0]) for line in lines) == ports


def keys_over_every_slot(count: int) -> list[str]:
    """`count` keys whose slots fall into `count` equal parts of the slot space, in order."""
    width = CLUSTER_SLOTS // count
    keys: list[str] = []
    for part in range(count):
        for attempt in range(100_000):  # about `width` tries finds one
            key = f"spread:{part}:{attempt}"
            if part * width <= key_slot(key.encode()) < (part + 1) * width:
                keys.append(key)
                break
    assert len(keys) == count
    return keys


@pytest.mark.parametrize("protocol", [2, 3])
async def test_redis_py_cluster_client_spreads_keys_over_every_node_without_a_redirection(
    nodes: list[NodeProcess], protocol: int
) -> None:
    await trio.to_thread.run_sync(gossip_spread, nodes)
    keys = keys_over_every_slot(100)
    before = [(resp_commands(n, "SET"), resp_commands(n, "GET")) for n in nodes]

    def talk() -> tuple[set[int], list[Any], list[bool]]:
        # Knows only node-2 at first; learns the others from CLUSTER SLOTS.
        cluster: Any = RedisCluster(host="127.0.0.1", port=nodes[1].resp_port, protocol=protocol)
        try:
            for key in keys:
                cluster.set(key, f"value of {key}")
            values = [cluster.get(key) for key in keys]
            # The slot the node computes is the one the client computed.
            slots = [cluster.cluster_keyslot(key) == cluster.keyslot(key) for key in keys[::10]]
            ports = {node.port for node in cluster.get_nodes()}
        finally:
            cluster.close()
        return ports, values, slots

    ports, values, slots = await trio.to_thread.run_sync(talk)
    assert slots == [True] * 10
    assert ports == {node.resp_port for node in nodes}
    assert values == [f"value of {key}".encode() for key in keys]
    after = [(resp_commands(n, "SET"), resp_commands(n, "GET")) for n in nodes]
    served = [(s1 - s0, g1 - g0) for (s0, g0), (s1, g1) in zip(before, after, strict=True)]
    # Every node took a share (the slots are spread), and each command was answered by
    # the first node it was sent to: a MOVED would have sent it a second time.
    assert all(sets > 0 and gets > 0 for sets, gets in served), served
    assert sum(sets for sets, _ in served) == 100 and sum(gets for _, gets in served) == 100


async def test_redis_cli_in_cluster_mode_reads_and_writes_through_any_node(
    nodes: list[NodeProcess],
) -> None:
    first, second, third = nodes
    keys = keys_over_every_slot(6)
    for index, key in enumerate(keys):
        assert cli(nodes[index % 3], "-c", "SET", key, str(index)) == "OK\n"
    for node in (first, second, third):
        assert cli(node, "-c", "MGET", *keys).split() == [str(i) for i in range(6)]


def test_redis_benchmark_through_one_node_of_the_cluster(nodes: list[NodeProcess]) -> None:
    command = [system_command("redis-benchmark"), "-p", str(nodes[2].resp_port)]
    done = subprocess.run(
        [*command, "-t", "set,get,mset,ping", "-n", "2000", "-q"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = (done.stdout + done.stderr).decode().replace("\r", "\n")
    assert done.returncode == 0 and "Error" not in output, output
    assert cli(nodes[0], "EXISTS", "key:__rand_int__") == "1\n"  # the other nodes see it


def test_the_nodes_logged_no_error(nodes: list[NodeProcess]) -> None:
    for node in nodes:
        logged = Path(node.log_path).read_text(errors="replace")
        assert " ERROR " not in logged and "Traceback" not in logged, logged[-3000:]


def test_a_quorum_that_cannot_answer_times_out_on_its_connection_which_then_serves_again(
    node_factory: NodeFactory,
) -> None:
    """Runs that wait for replicas are decided by callbacks, not a task: with both peers
    frozen (not yet suspected), a GET and a SET at QUORUM answer the request timeout's
    error in order on their connection, and once the peers resume it serves again."""
    frozen = start_cluster(node_factory, 3, FAILURE_TIMEOUT="30", REQUEST_TIMEOUT="1")
    with connected(frozen[0], 2) as r:
        r.set("frozen-key", "before")  # node-1 has links to both peers now
        for node in frozen[1:]:
            node.signal(signal.SIGSTOP)
        try:
            pipe = r.pipeline(transaction=False)
            pipe.get("frozen-key").set("frozen-key", "during").ping()
            began = time.monotonic()
            got, written, pong = pipe.execute(raise_on_error=False)
            waited = time.monotonic() - began
        finally:
            for node in frozen[1:]:
                node.signal(signal.SIGCONT)
        assert isinstance(got, redis.ResponseError)
        assert "did not answer the read within 1s" in str(got)
        assert isinstance(written, redis.ResponseError)
        assert "did not answer the write within 1s" in str(written)
        assert pong is True
        assert 1.5 <= waited < 6  # one request timeout for each of the two steps
        wait_for(lambda: r.set("frozen-key", "after") is True, 15, "a quorum again")
        assert r.get("frozen-key") == b"after"
