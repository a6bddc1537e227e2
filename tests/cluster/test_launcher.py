"""`a3redis cluster up`: the quick start's local cluster, started and stopped for real."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def holders(ports: list[int]) -> list[str]:
    """The sockets on these local ports, as /proc/net/tcp shows them (local, remote, state)."""
    wanted = {f"{port:04X}" for port in ports}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, remote, state = line.split()[1:4]
            if local.rsplit(":", 1)[1] in wanted:
                found.append(f"{local} -> {remote} state {state}")
    return found


def wait_until_free(ports: list[int], seconds: float) -> None:
    """The standard ports lie in the kernel's ephemeral range (32768-60999 here), so an
    outgoing connection from another test may hold one for a moment: wait for it."""
    deadline = time.monotonic() + seconds
    while not all(port_is_free(p) for p in ports):
        assert time.monotonic() < deadline, (
            f"the standard ports are taken on this machine: {holders(ports)}"
        )
        time.sleep(0.5)


def resp(port: int, command: bytes) -> bytes:
    """One inline Redis command's reply (a small one: it arrives in one read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(command)
        return connection.recv(4096)


def process_stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time in clock ticks) of a live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def children_of(parent: int) -> dict[int, int]:
    """The processes whose parent is `parent`, as pid -> start time."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := process_stat(int(entry.name))) is not None:
            ppid, _, started = stat
            if ppid == parent:
                found[int(entry.name)] = started
    return found


def still_running(pid: int, started: int) -> bool:
    """The same process (not a reused pid) and not a zombie waiting to be reaped."""
    stat = process_stat(pid)
    return stat is not None and stat[2] == started and stat[1] != "Z"


@pytest.mark.parametrize("presses", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_cluster_up_serves_and_ctrl_c_stops_every_node(tmp_path: Path, presses: int) -> None:
    ports = [50051, 50052, 50053, 8001, 8002, 8003, 6380, 6381, 6382]
    wait_until_free(ports, 60)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "a3redis.tools.cli", "cluster", "up", "--base-dir", str(tmp_path)],
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
        nodes = children_of(launcher.pid)
        assert len(nodes) == 3, nodes
        for pid in nodes:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert command[1:3] == [b"-m", b"a3redis.node"], command

        endpoints = "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053"
        assert run_cli("put", "hello", "world", "--endpoint", endpoints).returncode == 0
        got = run_cli("get", "hello", "--endpoint", "127.0.0.1:50053")
        assert got.stdout == "world\n", got.stderr
        while "Ctrl-C stops the cluster" not in (line := launcher.stdout.readline()) and line:
            seen.append(line)
        assert "redis-cli -p 6380 SET greeting hello" in "".join(seen)
        assert resp(6380, b"SET greeting hello\r\n") == b"+OK\r\n"
        assert resp(6382, b"GET greeting\r\n") == b"$5\r\nhello\r\n"

        launcher.send_signal(signal.SIGINT)
        if presses == 2:
            # An impatient second Ctrl-C while the nodes are stopping.
            while "stopping" not in (line := launcher.stdout.readline()) and line:
                seen.append(line)
            launcher.send_signal(signal.SIGINT)
        code = launcher.wait(20)
        output = "".join(seen) + launcher.stdout.read()
        assert "Traceback" not in output, output
        assert code == 0 or presses == 2, output
    finally:
        if launcher.poll() is None:
            launcher.kill()
    # No orphans: every node process is gone, and every port let go.
    left = [pid for pid, started in nodes.items() if still_running(pid, started)]
    assert not left, f"node processes still running after Ctrl-C: {left}"
    time.sleep(0.2)
    assert all(port_is_free(p) for p in ports)
    if presses == 1:
        for number in (1, 2, 3):
            assert "stopped cleanly" in (tmp_path / f"node{number}.log").read_text()
