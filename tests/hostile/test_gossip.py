"""Hostile gossip against real node processes: nothing a sender posts harms the cluster.

Anyone who reaches a node's HTTP port can POST /gossip (there is no authentication
yet). These tests post what such a sender would: bodies of every wrong shape and
type, huge and negative numbers, the 4,301-digit incarnation, ids that are paths
or lone surrogates, forged statuses and addresses for real members, floods from
a thousand senders. Then the cluster must be as it was: every node running and
healthy, every node's member table true (the three real members, alive, at their
own addresses; phantoms forgotten), every key written before readable at QUORUM,
new QUORUM writes and overwrites accepted through every node, and no file
anywhere but in the nodes' DATA_DIRs.

The attacker posts from loopback addresses of its own (127.0.0.x): nodes limit
gossip per remote host, and the real nodes all gossip from 127.0.0.1. Every load
loop is bounded in count and time.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio

from a3redis.client import Client
from a3redis.core.consistency import Consistency
from a3redis.core.membership import MAX_INCARNATION, MAX_INCOMPATIBLE, MAX_MESSAGE_BYTES
from a3redis.core.names import is_node_id
from tests.conftest import NodeFactory
from tests.support.clusters import peered_nodes, wait_all_alive_and_ready
from tests.support.hostile_gossip import HOSTILE
from tests.support.node_http import membership, metric, statuses
from tests.support.processes import HOST, NodeProcess, free_port, run_cli
from tests.support.waiting import wait_for

QUORUM = Consistency.QUORUM
ATTACKER = "127.0.0.77"
FAST = {
    "REPLICATION_FACTOR": "2",
    "GOSSIP_INTERVAL": "0.5",
    "FAILURE_TIMEOUT": "2",
    "DEAD_MEMBER_REAP": "2",
    "SYNC_INTERVAL": "2",
}
EVERYONE = {"node-1": "alive", "node-2": "alive", "node-3": "alive"}
KEYS = [f"before-{i}".encode() for i in range(200)]


@dataclass
class Cluster:
    nodes: list[NodeProcess]
    root: Path  # every node's DATA_DIR and log live here
    cwd: Path  # the nodes' working directory: must stay empty


@pytest.fixture
async def cluster(
    node_factory: NodeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Cluster:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # the node processes inherit it
    nodes = start_all(lambda: peered_nodes(node_factory, **FAST))
    wait_all_alive_and_ready(nodes, 15)
    async with Client.connect(nodes[0].endpoint) as client:
        for start in range(0, len(KEYS), 50):
            await client.batch_put([(k, b"v1-" + k) for k in KEYS[start : start + 50]], QUORUM)
    return Cluster(nodes, tmp_path, cwd)


def start_all(make: Callable[[], list[NodeProcess]]) -> list[NodeProcess]:
    """Start the nodes `make` returns, all at once; on new ports if one was taken.

    A port picked for a node is free when picked, but on a busy host any process's
    outgoing connection may take it as its source port before the node binds it.
    """
    for attempt in range(3):
        nodes = make()
        for node in nodes:
            node.start(wait=False)
        try:
            for node in nodes:
                node.wait_ready()
        except AssertionError as error:
            for node in nodes:
                node.kill()
            if "Address already in use" not in str(error) or attempt == 2:
                raise
            continue
        return nodes
    raise AssertionError("unreachable")


def post(node: NodeProcess, body: bytes, source: str = ATTACKER) -> tuple[int, Any]:
    connection = http.client.HTTPConnection(HOST, node.http_port, 10, source_address=(source, 0))
    try:
        connection.request("POST", "/gossip", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data


def member(node_id: str, port: int, status: str = "alive", inc: int = 1) -> dict[str, Any]:
    return {
        "id": node_id,
        "grpc": f"{HOST}:{port}",
        "gossip": f"{HOST}:{port}",
        "status": status,
        "inc": inc,
    }


def message(sender: dict[str, Any], *others: dict[str, Any], **top: Any) -> bytes:
    body = {
        "protocol": 1,
        "cluster": "a3redis",
        "replication_factor": 2,
        "sender": sender["id"],
        "members": [sender, *others],
        **top,
    }
    return json.dumps(body).encode()


def table_summary(node: NodeProcess) -> dict[str, Any]:
    """Real members as they are listed, and how many others per status."""
    table = membership(node)
    others: dict[str, int] = {}
    for node_id, entry in table.items():
        if node_id not in EVERYONE:
            others[entry["status"]] = others.get(entry["status"], 0) + 1
    real = {n: (e["status"], e["addr"]) for n, e in table.items() if n in EVERYONE}
    return {"real": real, "others": others}


def real_members_only(nodes: list[NodeProcess]) -> bool:
    """Every node lists exactly the three real members, alive, at their own addresses."""
    for node in nodes:
        table = membership(node)
        if {n: e["status"] for n, e in table.items()} != EVERYONE:
            return False
        for index, real in enumerate(nodes, start=1):
            entry = table[f"node-{index}"]
            if entry["addr"] != real.endpoint or entry["gossip_addr"] != f"{HOST}:{real.http_port}":
                return False
    return True


async def assert_unharmed(cluster: Cluster, within: float = 30.0) -> None:
    nodes = cluster.nodes
    for node in nodes:
        assert node.process is not None and node.process.poll() is None, node.output()[-3000:]
        health = node.health()
        assert health is not None and health["status"] == "ok", health
    try:
        wait_for(lambda: real_members_only(nodes), within, "only the real members, alive")
    except AssertionError as error:
        raise AssertionError(f"{error}; tables: {[table_summary(n) for n in nodes]}") from None
    tag = str(time.monotonic_ns()).encode()
    for index, node in enumerate(nodes):
        async with Client.connect(node.endpoint) as client:
            for key in KEYS[index::20]:
                got = await client.get(key, QUORUM)
                assert got.found, key
                assert got.value in (b"v1-" + key, b"v2-" + key), (key, got.value)
            for key in KEYS[index::30]:  # overwrites
                await client.put(key, b"v2-" + key, QUORUM)
            for n in range(10):  # new keys
                await client.put(b"new-%s-%d-%d" % (tag, index, n), b"x", QUORUM)
    for index, node in enumerate(nodes):
        async with Client.connect(node.endpoint) as client:
            for n in range(10):
                assert (await client.get(b"new-%s-%d-%d" % (tag, index, n), QUORUM)).found
    assert_no_stray_files(cluster)


def assert_no_stray_files(cluster: Cluster) -> None:
    assert list(cluster.cwd.iterdir()) == []
    expected = {f"n{i}{suffix}" for i in (1, 2, 3) for suffix in ("-data", ".log")} | {"cwd"}
    assert {path.name for path in cluster.root.iterdir()} <= expected
    for node in cluster.nodes:
        hints = node.data_dir / "hints"
        for path in hints.iterdir() if hints.exists() else ():
            assert path.is_file() and path.suffix == ".hints" and is_node_id(path.stem), path


# ----- malformed bodies ----------------------------------------------------------------------


def crash_repros(nodes: list[NodeProcess]) -> list[bytes]:
    """The bodies that crashed nodes before, aimed at real members."""
    node_2 = member("node-2", nodes[1].grpc_port)
    evil = member("evil", free_port())
    huge = json.dumps(node_2).replace('"inc": 1', '"inc": 1' + "0" * 4299).encode()
    bodies = [
        message(evil).replace(b'"members": [', b'"members": [' + huge + b", "),
        message(evil, {**node_2, "inc": 10**200}),
        message(evil, {**node_2, "inc": -1}),
    ]
    for odd in ("../../x", "a/b", "x" * 256, "\ud800"):
        bodies.append(message(member(odd, free_port())))
        bodies.append(message(evil, member(odd, free_port())))
    bodies.append(message(evil, member("ghost", 1), cluster="\ud800"))
    bodies.append(message(evil, {**member("ghost", 1), "grpc": "127.0.0.1:1/../x"}))
    bodies.append(message(evil, {**member("ghost", 1), "gossip": "user@127.0.0.1:1"}))
    return bodies


async def test_malformed_and_hostile_bodies_are_refused_and_change_nothing(
    cluster: Cluster,
) -> None:
    nodes = cluster.nodes
    # (Bodies over the size limit are refused before they are read: test_membership.py.)
    bodies = [body for body, _ in HOSTILE if len(body) <= MAX_MESSAGE_BYTES] + crash_repros(nodes)
    for index, body in enumerate(bodies):
        status, answer = post(nodes[index % 3], body)
        assert status == 400, (status, answer, body[:100])
        error = answer["error"]
        assert error.startswith("malformed gossip message: "), error
        # Names the field and the limit; never a repr of what was sent.
        assert re.match(
            r"malformed gossip message: (body|protocol|cluster|replication_"
            r"factor|sender|members)",
            error,
        ), error
        assert error.isascii() and "../../x" not in error and "\\u" not in error, error
    assert len(bodies) > 70
    assert metric(nodes[0], "a3redis_rejected_total", 0.0, endpoint="gossip", reason="invalid") > 0
    # Refused, hence nothing changed: the table is the same at once.
    assert all(set(membership(node)) == set(EVERYONE) for node in nodes)
    await assert_unharmed(cluster)
    # Logged at most once per sender per minute, not once per body.
    for node in nodes:
        assert node.output().count(f"refused gossip ({ATTACKER})") <= 2


# ----- forged claims about real members ------------------------------------------------------


async def test_forged_statuses_and_addresses_of_real_members_do_not_stick(
    cluster: Cluster,
) -> None:
    nodes = cluster.nodes
    table = membership(nodes[0])
    incarnations = {node_id: entry["incarnation"] for node_id, entry in table.items()}
    evil = member("evil", free_port())
    forged = [
        # node-2 dead at the highest incarnation: it must refute without overflowing.
        {**member("node-2", nodes[1].grpc_port, "dead", MAX_INCARNATION)},
        # node-3 left, one above its incarnation.
        {**member("node-3", nodes[2].grpc_port, "left", incarnations["node-3"] + 1)},
        # node-1 at the attacker's address, at its own incarnation (the old tie-break
        # favoured the lexically larger address: "zz..." always won).
        {**member("node-1", 1, "alive", incarnations["node-1"]), "grpc": "zzzz.invalid:1"},
    ]
    for target in nodes:
        for claim in forged:
            status, answer = post(target, message(evil, claim))
            assert status == 200, answer
    await assert_unharmed(cluster)
    table = membership(nodes[2])
    assert table["node-2"]["incarnation"] == MAX_INCARNATION  # took the cap, stays alive
    assert table["node-3"]["incarnation"] > incarnations["node-3"] + 1
    for node in nodes:
        assert node.output().count("Traceback") == 0


# ----- floods --------------------------------------------------------------------------------


async def test_a_thousand_senders_leave_every_table_bounded_and_are_forgotten(
    cluster: Cluster,
) -> None:
    nodes = cluster.nodes
    started = time.monotonic()
    answers: dict[int, int] = {}
    largest_table = most_phantoms = 0
    # 1,000 distinct senders from 20 loopback hosts (within each host's burst): half
    # claim to be members (phantoms at closed ports), half another cluster.
    for index in range(1000):
        if time.monotonic() - started > 90:
            break
        sender = member(f"phantom-{index}", free_port())
        cluster_name = "a3redis" if index % 2 else "other-cluster"
        status, _ = post(
            nodes[index % 3], message(sender, cluster=cluster_name), f"127.0.0.{100 + index % 20}"
        )
        answers[status] = answers.get(status, 0) + 1
        if index % 100 == 99:
            table = membership(nodes[0])
            largest_table = max(largest_table, len(json.dumps(table)))
            incompatible = [n for n, e in table.items() if e["status"] == "incompatible"]
            assert len(incompatible) <= MAX_INCOMPATIBLE
            most_phantoms = max(most_phantoms, sum(n.startswith("phantom-") for n in table))
            # The real members stay alive through it.
            assert all(table[n]["status"] == "alive" for n in EVERYONE), table
    assert sum(answers.values()) == 1000, answers
    assert set(answers) <= {200, 409}, answers
    # One host flooding is held to its rate: 429 beyond the burst.
    flood = [post(nodes[0], message(member("flood", free_port())))[0] for _ in range(400)]
    assert flood.count(429) > 0 and set(flood) <= {200, 429}, flood
    assert metric(nodes[0], "a3redis_rejected_total", 0.0, endpoint="gossip", reason="rate_limited")
    assert largest_table < 300_000, largest_table
    assert most_phantoms > 100, most_phantoms  # the flood did make members (then forgot them)
    # Phantoms never answer: dead after FAILURE_TIMEOUT, forgotten DEAD_MEMBER_REAP later.
    await assert_unharmed(cluster, within=60)
    assert "forgot phantom-" in nodes[0].output()


# ----- files ---------------------------------------------------------------------------------


async def test_hints_live_in_data_dir_and_go_with_a_forgotten_target(cluster: Cluster) -> None:
    nodes = cluster.nodes
    ghost = member("ghost", free_port())
    for node in nodes:
        assert post(node, message(ghost))[0] == 200
    # Writes whose replicas include the ghost become hints for it, in DATA_DIR/hints.
    async with Client.connect(nodes[0].endpoint) as client:
        for n in range(100):
            await client.put(b"during-%d" % n, b"x", Consistency.ONE)
    hint_files = [node.data_dir / "hints" / "ghost.hints" for node in nodes]
    wait_for(lambda: any(path.exists() for path in hint_files), 10, "hints for the ghost")
    # Once it is forgotten, its hints go with it.
    wait_for(lambda: not any(path.exists() for path in hint_files), 30, "ghost hints dropped")
    await assert_unharmed(cluster)
    assert any("dropped" in node.output() and "ghost" in node.output() for node in nodes)


async def test_a_saved_table_from_an_older_release_does_not_stop_a_node(cluster: Cluster) -> None:
    nodes = cluster.nodes
    node = nodes[2]
    assert node.stop() == 0
    saved = json.loads((node.data_dir / "members.json").read_text())
    good = saved["members"]
    bad: list[Any] = [
        member("../../x", 1),
        member("a/b", 1),
        member("x" * 256, 1),
        member("\ud800", 1),
        {**member("ghost", 1), "inc": -5},
        {**member("ghost", 1), "status": "zombie"},
        "not an entry",
        None,
        good[0],  # listed twice
    ]
    text = json.dumps({**saved, "members": [*good, *bad]})
    # An incarnation an older release took from gossip (past 4,300 digits Python's own
    # JSON reader refuses the whole file).
    text = text.replace('"inc": -5', '"inc": 1' + "0" * 5000)
    (node.data_dir / "members.json").write_text(text)
    (node.data_dir / "incarnation").write_text("9" * 5000 + "\n")
    node.start()
    await trio.sleep(3)  # several gossip rounds: it used to exit again within seconds
    await assert_unharmed(cluster)
    assert node.output().count("skipped 9 bad entries") == 1, node.output()[-2000:]
    assert membership(node)["node-3"]["incarnation"] < MAX_INCARNATION


# ----- leaving -------------------------------------------------------------------------------


class _Refusing(BaseHTTPRequestHandler):
    """A peer's gossip endpoint that answers every POST with `status` (or garbage)."""

    status = 409

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"error": "incompatible peer: no"}' if self.status != 200 else b"\xff" * 100
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def refusing_peer(status: int) -> Iterator[int]:
    handler = type("Handler", (_Refusing,), {"status": status})
    server = ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("answer", [409, 500, 200])
def test_a_node_stopping_exits_0_whatever_its_peers_answer(
    node_factory: NodeFactory, answer: int
) -> None:
    (node,) = start_all(lambda: [node_factory("solo", FAILURE_TIMEOUT="30")])
    with refusing_peer(answer) as port:
        peer = member("refuser", port)
        status, _ = post(node, message(peer, replication_factor=1))
        assert status == 200
        wait_for(lambda: statuses(node).get("refuser") == "alive", 5, "the refuser is a member")
        time.sleep(1.5)  # it has been probed (and answered) at least once
        node.signal(signal.SIGTERM)
        assert node.wait_exit() == 0, node.output()[-3000:]
    assert "announced stop to 1 members" in node.output()


# ----- members that never come back ----------------------------------------------------------


def test_cluster_status_announces_a_dead_member_and_then_that_it_was_forgotten(
    node_factory: NodeFactory,
) -> None:
    (node,) = start_all(lambda: [node_factory("solo", FAILURE_TIMEOUT="1", DEAD_MEMBER_REAP="8")])
    assert post(node, message(member("ghost", free_port()), replication_factor=1))[0] == 200
    wait_for(lambda: statuses(node).get("ghost") == "dead", 10, "the ghost is dead")
    status = run_cli("cluster", "status", "--endpoint", node.endpoint)
    assert status.returncode == 0, status.stderr
    assert re.search(
        r"note: ghost has been dead for \d+s; it will be forgotten .* in \d+s", status.stdout
    ), status.stdout
    wait_for(lambda: "ghost" not in statuses(node), 15, "the ghost is forgotten")
    status = run_cli("cluster", "status", "--endpoint", node.endpoint, "-o", "json")
    body = json.loads(status.stdout)
    assert [gone["node_id"] for gone in body["forgotten"]] == ["ghost"]
    assert "ghost" not in {m["node_id"] for m in body["members"]}
    text = run_cli("cluster", "status", "--endpoint", node.endpoint).stdout
    assert re.search(r"note: ghost was forgotten \d+s ago after being dead", text), text
