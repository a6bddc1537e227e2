"""`a3redis cluster up`: the quick start's local cluster, started and stopped for real."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.processes import run_cli


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        # As the node binds: TIME_WAIT from earlier connections does not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_cluster_up_serves_and_ctrl_c_stops_every_node(tmp_path: Path) -> None:
    ports = [50051, 50052, 50053, 8001, 8002, 8003]
    assert all(port_is_free(p) for p in ports), "the standard ports are taken on this machine"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "a3redis.cli", "cluster", "up", "--base-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert launcher.stdout is not None
        seen = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            line = launcher.stdout.readline()
            seen.append(line)
            if "nodes are alive" in line or not line:
                break
        assert "all 3 nodes are alive" in "".join(seen), "".join(seen)

        endpoints = "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053"
        assert run_cli("put", "hello", "world", "--endpoint", endpoints).returncode == 0
        got = run_cli("get", "hello", "--endpoint", "127.0.0.1:50053")
        assert got.stdout == "world\n", got.stderr

        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(20) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    # No orphans: every node let go of its ports.
    time.sleep(0.2)
    assert all(port_is_free(p) for p in ports)
    for number in (1, 2, 3):
        assert "stopped cleanly" in (tmp_path / f"node{number}.log").read_text()
