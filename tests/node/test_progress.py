"""Progress of `repair --wait`: on stderr when it is a terminal, never in the way of `-o json`."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys

from a3redis.tools.progress import Progress
from tests.conftest import NodeFactory
from tests.support.processes import run_cli


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_one_line_in_place_and_erases_it() -> None:
    terminal = Terminal()
    with Progress(terminal) as progress:
        progress.show("repair on node-1: 0.0s")
        progress.show("repair on node-1: 0.5s, 3 keys moved")
    assert terminal.getvalue() == (
        "\r\x1b[2Krepair on node-1: 0.0s\r\x1b[2Krepair on node-1: 0.5s, 3 keys moved\r\x1b[2K"
    )
    pipe = io.StringIO()
    with Progress(pipe) as progress:
        progress.show("anything")
    assert not progress.enabled and pipe.getvalue() == ""


def run_with_terminal_stderr(*args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the CLI with stdout a pipe and stderr a pseudo-terminal; return what each got."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "a3redis.tools.cli", *args],
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        stdout, _ = process.communicate(timeout=30)
    finally:
        os.close(leader)
    completed = subprocess.CompletedProcess(process.args, process.returncode, stdout, "")
    return completed, b"".join(chunks).decode()


def test_repair_wait_shows_progress_on_a_terminal_only(node_factory: NodeFactory) -> None:
    node = node_factory().start()
    result, terminal = run_with_terminal_stderr(
        "repair", "--wait", "--endpoint", node.endpoint, "-o", "json"
    )
    assert result.returncode == 0, terminal
    assert json.loads(result.stdout) == []  # one node: no peer to compare with
    assert "repair on node-1: " in terminal
    assert terminal.endswith("\r\x1b[2K"), repr(terminal)  # erased: only the result remains

    piped = run_cli("repair", "--wait", "--endpoint", node.endpoint, "-o", "json")
    assert (piped.returncode, piped.stderr) == (0, "")
    assert json.loads(piped.stdout) == []
