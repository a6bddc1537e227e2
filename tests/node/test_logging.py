"""LOG_FORMAT: the node's logs, and Hypercorn's and purerpc's, as one JSON object per line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

from tests.conftest import NodeFactory
from tests.support.processes import run_cli, run_node_once


def json_lines(text: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


def test_json_logs_cover_our_lines_and_the_libraries(node_factory: NodeFactory) -> None:
    node = node_factory(LOG_FORMAT="json").start()
    put = run_cli("put", "k", "v", "--endpoint", node.endpoint)
    assert put.returncode == 0, put.stderr
    assert node.health() is not None
    node.signal(signal.SIGTERM)
    assert node.wait_exit() == 0

    records = json_lines(node.output())
    for record in records:
        assert {"timestamp", "level", "logger", "node_id", "event"} <= record.keys(), record
        assert record["node_id"] == "node-1"
        assert record["timestamp"].endswith("Z")  # ISO 8601, UTC
    assert next(iter(records[0])) == "timestamp"  # fixed fields first, for people reading
    hypercorn = [r for r in records if r["logger"].startswith("hypercorn")]
    assert any(r["event"].startswith("Running on http://") for r in hypercorn), records
    ours = [r for r in records if r["logger"].startswith("a3redis.")]
    assert any("serving gRPC on" in r["event"] for r in ours), records
    assert any(r["event"] == "stopped cleanly" and r["level"] == "info" for r in ours)


def test_debug_log_still_works_in_json(node_factory: NodeFactory) -> None:
    node = node_factory(LOG_FORMAT="json", DEBUG_LOG="1").start()
    assert run_cli("get", "missing", "--endpoint", node.endpoint).returncode == 1
    node.signal(signal.SIGTERM)
    assert node.wait_exit() == 0
    records = json_lines(node.output())
    debug = [r for r in records if r["level"] == "debug"]
    assert debug, "DEBUG_LOG=1 logged nothing at debug level"
    # purerpc's and the HTTP/2 libraries' debug lines are formatted like ours.
    assert {r["logger"].split(".")[0] for r in debug} - {"a3redis"}, debug[:5]


def test_text_stays_the_default(node_factory: NodeFactory) -> None:
    node = node_factory().start()
    node.signal(signal.SIGTERM)
    assert node.wait_exit() == 0
    first = node.output().splitlines()[0]
    assert " INFO node-1 [" in first and not first.startswith("{"), first


def test_an_unknown_log_format_stops_the_node() -> None:
    result = run_node_once({"LOG_FORMAT": "yaml", "GRPC_PORT": "0", "GOSSIP_PORT": "0"})
    assert result.returncode == 2
    assert "LOG_FORMAT='yaml' is invalid: expected one of text, json" in result.stderr


CRASH = """
import threading
from a3redis.runtime import logs

logs.configure("node-7", debug=False, log_format=logs.LogFormat.JSON)
worker = threading.Thread(target=lambda: 1 / 0, name="worker")
worker.start()
worker.join()
raise RuntimeError("boom")
"""


def test_a_crash_is_logged_as_json_like_every_other_line() -> None:
    # What Python prints for an uncaught exception, in the main thread or another.
    result = subprocess.run(
        [sys.executable, "-c", CRASH], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    thread_crash, main_crash = json_lines(result.stderr)
    assert (thread_crash["level"], thread_crash["node_id"]) == ("critical", "node-7")
    assert thread_crash["event"] == "uncaught ZeroDivisionError in thread worker"
    assert "ZeroDivisionError: division by zero" in thread_crash["exception"]
    assert main_crash["level"] == "critical"
    assert main_crash["event"] == "uncaught RuntimeError: the process stops"
    assert main_crash["exception"].rstrip().endswith("RuntimeError: boom")
