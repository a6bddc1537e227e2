"""`a3redis node --interactive`: the seed's kvrun.sh questions, then a real node."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from a3redis import interactive
from a3redis.interactive import Answers
from tests.support.processes import HOST, free_port


def ask(text: str) -> tuple[Answers, str]:
    out = io.StringIO()
    answers = interactive.ask(io.StringIO(text), out)
    return answers, out.getvalue()


def test_empty_answers_take_the_defaults() -> None:
    answers, prompts = ask("\n\n\n")
    assert answers == Answers(node=1, total=3, replication_factor=3)
    # Answers from a pipe are echoed, so the transcript reads as it would on a terminal.
    assert prompts == "Node number [1]: \nTotal nodes [3]: \nReplication factor [3]: \n"


def test_an_invalid_answer_says_why_and_asks_again() -> None:
    answers, prompts = ask("two\n0\n4\n2\n\n9\n2\n")
    assert answers == Answers(node=4, total=4, replication_factor=2)
    assert "'two' is not valid: enter a whole number from 1 to 10000" in prompts
    assert "'0' is not valid" in prompts
    # Fewer nodes than this node's number, or more copies than nodes, cannot be.
    assert "'2' is not valid: enter a whole number from 4 to 10000" in prompts
    assert "'9' is not valid: enter a whole number from 1 to 4" in prompts
    assert prompts.count("Node number") == 3 and prompts.count("Replication factor") == 2


def test_end_of_input_starts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(interactive.NoAnswer):
        ask("2\n")
    assert interactive.run(io.StringIO("2\n"), io.StringIO(), {}) == 2
    assert "no answer to 'Total nodes' (end of input)" in capsys.readouterr().err


def test_the_command_line_derives_ports_and_keeps_what_the_environment_set() -> None:
    answers = Answers(node=2, total=3, replication_factor=2)
    standard = interactive.node_variables(answers, {})
    assert interactive.command_line(standard, "python") == (
        "NODE_NUM=2 NODE_ID=node-2 GRPC_PORT=50052 GOSSIP_PORT=8002 TOTAL_NODES=3 "
        "REPLICATION_FACTOR=2 DATA_DIR=./data/node2 python -m a3redis.node"
    )
    kept = interactive.node_variables(answers, {"GRPC_PORT": "6000", "DATA_DIR": "/srv/my data"})
    assert interactive.command_line(kept, "python") == (
        "NODE_NUM=2 NODE_ID=node-2 GRPC_PORT=6000 GOSSIP_PORT=8002 TOTAL_NODES=3 "
        "REPLICATION_FACTOR=2 DATA_DIR='/srv/my data' python -m a3redis.node"
    )


def wait_for_health(
    process: subprocess.Popen[str], http_port: int, log_path: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        try:
            with urllib.request.urlopen(f"http://{HOST}:{http_port}/health", timeout=1) as r:
                body: dict[str, Any] = json.load(r)
                return body
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.05)
    raise AssertionError(f"no /health within 20s:\n{log_path.read_text()}")


def test_interactive_node_prints_its_command_line_and_serves(tmp_path: Path) -> None:
    grpc_port, http_port = free_port(), free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("A3REDIS_")}
    env.update(
        GRPC_PORT=str(grpc_port),
        GOSSIP_PORT=str(http_port),
        DATA_DIR=str(data_dir),
        # TOTAL_NODES=3 seeds node-2 with nodes 1 and 3 at the standard ports: never
        # join a cluster someone runs on this machine.
        CLUSTER_NAME="interactive-test",
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "a3redis.cli", "node", "--interactive"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("x\n2\n3\n2\n")
        process.stdin.close()
        lines = [process.stdout.readline() for _ in range(7)]
        assert lines[:5] == [
            "Node number [1]: x\n",
            "  'x' is not valid: enter a whole number from 1 to 10000\n",
            "Node number [1]: 2\n",
            "Total nodes [3]: 3\n",
            "Replication factor [3]: 2\n",
        ]
        assert lines[5] == "starting node-2; the same without questions:\n"
        assert lines[6] == (
            f"NODE_NUM=2 NODE_ID=node-2 GRPC_PORT={grpc_port} GOSSIP_PORT={http_port} "
            f"TOTAL_NODES=3 REPLICATION_FACTOR=2 DATA_DIR={data_dir} "
            f"{sys.executable} -m a3redis.node\n"
        )
        health = wait_for_health(process, http_port, log_path)
        assert health["node_id"] == "node-2" and health["cluster_name"] == "interactive-test"
        assert data_dir.is_dir()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0, log_path.read_text()
        assert "stopped cleanly" in log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
