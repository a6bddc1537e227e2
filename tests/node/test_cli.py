"""The `a3redis` command line against a real node process."""

from __future__ import annotations

import json

from tests.conftest import NodeFactory
from tests.support.processes import free_port, run_cli


def test_cli_put_get_delete_scan(node_factory: NodeFactory) -> None:
    node = node_factory().start()
    endpoint = ["--endpoint", node.endpoint]

    put = run_cli("put", "greeting", "hello world", *endpoint)
    assert put.returncode == 0 and put.stdout.startswith("OK "), put.stderr

    got = run_cli("get", "greeting", *endpoint)
    assert (got.returncode, got.stdout) == (0, "hello world\n")

    as_json = json.loads(run_cli("get", "greeting", *endpoint, "-o", "json").stdout)
    assert as_json["found"] is True and as_json["value"] == "hello world"
    assert as_json["version"]["node_id"] == "node-1"

    for key in ("fruit:apple", "fruit:banana", "veg:leek"):
        assert run_cli("put", key, key.upper(), *endpoint, "--consistency", "local").returncode == 0
    scan = run_cli("scan", "--prefix", "fruit:", *endpoint)
    assert scan.stdout == "fruit:apple\tFRUIT:APPLE\nfruit:banana\tFRUIT:BANANA\n"
    limited = json.loads(run_cli("scan", "--limit", "2", *endpoint, "-o", "json").stdout)
    assert [entry["key"] for entry in limited] == ["fruit:apple", "fruit:banana"]

    assert run_cli("delete", "greeting", *endpoint).returncode == 0
    missing = run_cli("get", "greeting", *endpoint, "-o", "json")
    assert missing.returncode == 1
    assert json.loads(missing.stdout) == {"key": "greeting", "found": False}


def test_cli_errors_are_one_line_without_traceback(node_factory: NodeFactory) -> None:
    node = node_factory(MAX_VALUE_BYTES="10").start()
    too_big = run_cli("put", "k", "x" * 11, "--endpoint", node.endpoint)
    assert too_big.returncode == 3
    assert too_big.stderr.count("\n") == 1
    assert "INVALID_ARGUMENT" in too_big.stderr and "MAX_VALUE_BYTES=10" in too_big.stderr
    assert too_big.stderr.rstrip().endswith("[VALUE_TOO_LARGE]")  # the node's reason

    nobody = run_cli("get", "k", "--endpoint", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert nobody.returncode == 3
    assert "UNAVAILABLE" in nobody.stderr and "Traceback" not in nobody.stderr

    bad_level = run_cli("get", "k", "--consistency", "most", "--endpoint", node.endpoint)
    assert bad_level.returncode == 2 and "unknown consistency level" in bad_level.stderr


def test_cli_ttl_expire_and_persist(node_factory: NodeFactory) -> None:
    node = node_factory().start()
    endpoint = ["--endpoint", node.endpoint]
    assert run_cli("put", "session", "s", "--ttl", "30s", *endpoint).returncode == 0
    left = run_cli("ttl", "session", *endpoint)
    assert left.returncode == 0 and left.stdout.endswith("s\n") and left.stdout.startswith("2")
    shown = json.loads(run_cli("ttl", "session", *endpoint, "-o", "json").stdout)
    assert 20_000 < shown["ttl_ms"] <= 30_000 and shown["expires_at_ms"] > 0

    assert run_cli("persist", "session", *endpoint).stdout == "OK\n"
    assert run_cli("ttl", "session", *endpoint).stdout == "(no expiry)\n"
    unchanged = run_cli("persist", "session", *endpoint)
    assert unchanged.returncode == 1 and "unchanged" in unchanged.stdout

    assert run_cli("expire", "session", "5m", *endpoint).stdout == "OK\n"
    assert run_cli("ttl", "session", *endpoint).stdout.startswith("4m ")
    assert run_cli("expire", "session", "1h", "--only", "nx", *endpoint).returncode == 1
    missing = run_cli("ttl", "nothing", *endpoint)
    assert (missing.returncode, missing.stdout) == (1, "(not found)\n")

    bad = run_cli("put", "k", "v", "--ttl", "soon", *endpoint)
    assert bad.returncode == 2 and "not a duration" in bad.stderr
