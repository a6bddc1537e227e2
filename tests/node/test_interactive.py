"""`a3redis node --interactive`: the seed's kvrun.sh questions, then a real node."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from a3redis.tools import interactive
from a3redis.tools.interactive import Answers
from tests.support.processes import NodeProcess


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


def test_interactive_node_prints_its_command_line_and_serves(tmp_path: Path) -> None:
    # TOTAL_NODES=3 seeds node-2 with nodes 1 and 3 at the standard ports: never
    # join a cluster someone runs on this machine.
    node = NodeProcess(
        tmp_path / "data", tmp_path / "node.log", {"CLUSTER_NAME": "interactive-test"}
    )
    # The command line it prints names the node settings it was given: only ports and DATA_DIR.
    del node.own_env["BIND_HOST"]
    grpc_port, http_port, data_dir = node.grpc_port, node.http_port, node.data_dir
    node.start(
        wait=False,
        command=["-m", "a3redis.tools.cli", "node", "--interactive"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    process = node.process
    assert process is not None
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
        health = node.wait_ready(any_status=True)
        assert health["node_id"] == "node-2" and health["cluster_name"] == "interactive-test"
        assert data_dir.is_dir()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0, node.output()
        assert "stopped cleanly" in node.output()
    finally:
        node.kill()
