"""`a3redis cluster status` and `a3redis cluster ring` against three real node processes."""

from __future__ import annotations

import json
import re

from tests.conftest import NodeFactory
from tests.support.clusters import start_cluster
from tests.support.processes import NodeProcess, run_cli


def held(node: NodeProcess, prefix: str) -> set[str]:
    """The keys with `prefix` of the node's own copies, as `scan --consistency local` lists them."""
    found = run_cli(
        "scan", "--prefix", prefix, "--consistency", "local", "-o", "json", "-e", node.endpoint
    )
    assert found.returncode == 0, found.stderr
    return {entry["key"] for entry in json.loads(found.stdout)}


def test_cluster_status_and_ring_tell_the_truth(node_factory: NodeFactory) -> None:
    nodes = start_cluster(node_factory, 2)
    entry = ["--endpoint", nodes[0].endpoint]

    text = run_cli("cluster", "status", *entry)
    assert text.returncode == 0, text.stderr
    header, *rows = text.stdout.split("\n\n")[0].splitlines()
    assert header.startswith("NODE  ") and header.endswith("  SHARE  LAST REPAIR")
    assert [row.split()[0] for row in rows] == ["node-1", "node-2", "node-3"]
    for row, node in zip(rows, nodes, strict=True):
        assert row.split()[1:5] == [node.endpoint, f"127.0.0.1:{node.http_port}", "alive", "normal"]
    shares = [float(re.findall(r" ([0-9.]+)% ", row)[0]) for row in rows]
    assert abs(sum(shares) - 100) < 0.5 and all(25 < share < 42 for share in shares)

    as_json = run_cli("cluster", "status", *entry, "-o", "json")
    status = json.loads(as_json.stdout)
    assert (status["entry"], status["replication_factor"]) == ("node-1", 2)
    members = status["members"]
    assert [m["node_id"] for m in members] == ["node-1", "node-2", "node-3"]
    assert all(m["status"] == "alive" and m["reachable"] and m["ring_agrees"] for m in members)
    assert all(m["role"] == "normal" and m["progress"] is None for m in members)
    assert abs(sum(m["share"] for m in members) - 1) < 1e-9

    # Owners of a key, as the nodes place it: exactly they hold it after a put.
    keys = [f"user:{number}" for number in range(8)]
    owners: dict[str, list[str]] = {}
    for key in keys:
        assert run_cli("put", key, "v", *entry).returncode == 0
        ring = json.loads(run_cli("cluster", "ring", "--key", key, *entry, "-o", "json").stdout)
        owners[key] = sorted(owner["node_id"] for owner in ring["owners"])
        assert len(owners[key]) == 2 and ring["partitions"] == 4096
    holdings = {f"node-{i}": held(node, "user:") for i, node in enumerate(nodes, start=1)}
    for key in keys:
        holders = [node_id for node_id, keys_held in holdings.items() if key in keys_held]
        assert owners[key] == holders, (key, owners[key], holders)
    after_puts = json.loads(run_cli("cluster", "status", *entry, "-o", "json").stdout)
    assert sum(m["keys"] for m in after_puts["members"]) == 2 * len(keys)

    first = run_cli("cluster", "ring", "--key", "user:0", *entry)
    assert first.returncode == 0
    assert first.stdout.startswith("key 'user:0': partition ")
    assert "2 replicas in preference order" in first.stdout

    placement = json.loads(run_cli("cluster", "ring", *entry, "-o", "json").stdout)
    per_node = placement["members"]
    assert [m["node_id"] for m in per_node] == ["node-1", "node-2", "node-3"]
    assert sum(m["partitions"] for m in per_node) == 2 * 4096
    assert sum(m["primary"] for m in per_node) == 4096
    for m in per_node:
        assert sum(last - first + 1 for first, last in m["ranges"]) == m["partitions"]
    ring_text = run_cli("cluster", "ring", *entry).stdout
    assert ring_text.startswith("ring of node-1: 3 members, replication factor 2")

    # A member that does not answer is shown as such, not a failure.
    nodes[2].kill()
    after = run_cli("cluster", "status", *entry)
    assert after.returncode == 0, after.stderr
    node3 = next(line for line in after.stdout.splitlines() if line.startswith("node-3"))
    assert "(unreachable)" in node3
    gone = json.loads(run_cli("cluster", "status", *entry, "-o", "json").stdout)["members"][2]
    assert gone["reachable"] is False and gone["keys"] is None and gone["error"]


def test_an_unreachable_entry_node_is_a_failed_request(node_factory: NodeFactory) -> None:
    node = node_factory().start()
    node.kill()
    for command in (["status"], ["ring"], ["ring", "--key", "k"]):
        result = run_cli("cluster", *command, "--endpoint", node.endpoint, "--timeout", "2")
        assert result.returncode == 3, result
        assert "UNAVAILABLE" in result.stderr and "Traceback" not in result.stderr
