"""Real node processes for tests: start, wait until ready, signal, restart, clean up.

Rules: every process a test starts is stopped by the fixture that started it,
even when the test fails (kill -9 by PID as a last resort); traffic goes to
127.0.0.1 only; waiting is bounded in time and fails with the node's output.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


# Ports handed out in this process: a node that is down keeps its port free for its restart.
_HANDED_OUT: set[int] = set()
LOWEST_PORT = 20000


def _ephemeral_floor() -> int:
    """The first port the kernel gives outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Set by `nox -s tests` ("K/N") when N pytest processes share the machine's loopback:
# each hands out ports from its own K-th of the range only, so that none takes a port
# another has handed out to a node that is down for a restart.
PORT_SLICE_VARIABLE = "A3REDIS_TEST_PORT_SLICE"


def port_range(slice_spec: str | None, high: int) -> tuple[int, int]:
    """The ports this process may hand out: [LOWEST_PORT, high], or its slice of them."""
    if not slice_spec:
        return LOWEST_PORT, high
    try:
        index, count = (int(part) for part in slice_spec.split("/"))
    except ValueError:
        index = count = -1
    if not 0 <= index < count:
        raise ValueError(f"{PORT_SLICE_VARIABLE}={slice_spec!r}: expected K/N with 0 <= K < N")
    width = (high - LOWEST_PORT + 1) // count
    first = LOWEST_PORT + index * width
    return first, first + width - 1


def free_port() -> int:
    """A free port below the kernel's ephemeral range, never handed out twice here.

    A port the kernel picked (bind to 0) may be taken as the source port of an
    outgoing connection while its node is down, and the restart then fails with
    "address already in use"; ports below the ephemeral range are only ever bound.
    """
    rng = random.Random()
    low, high = port_range(
        os.environ.get(PORT_SLICE_VARIABLE), max(LOWEST_PORT + 1000, _ephemeral_floor()) - 1
    )
    for _ in range(10_000):
        port = rng.randint(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port from {low} to {high}")


NODE_COMMAND = ("-m", "a3redis.node")


class NodeProcess:
    """One `python -m a3redis.node` process with a fixed identity, ports and DATA_DIR.

    The one wrapper of a node process for every test layer: on 127.0.0.1 with
    ports picked free (node_factory), or on a given host and ports (the fault
    suite's namespace nodes, which override `_launch`).
    """

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        *,
        host: str = HOST,
        grpc_port: int | None = None,
        http_port: int | None = None,
        resp_port: int | None = None,
    ):
        self.data_dir = data_dir
        self.log_path = log_path
        self.host = host
        self.grpc_port = free_port() if grpc_port is None else grpc_port
        self.http_port = free_port() if http_port is None else http_port
        self.resp_port = free_port() if resp_port is None else resp_port
        # What the node is told about itself; `extra_env` (the test's) comes after it.
        self.own_env = {
            "GRPC_PORT": str(self.grpc_port),
            "GOSSIP_PORT": str(self.http_port),
            "RESP_PORT": str(self.resp_port),
            "DATA_DIR": str(self.data_dir),
            "BIND_HOST": host,
            "PYTHONUNBUFFERED": "1",
        }
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[Any] | None = None
        self.starts = 0

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def gossip(self) -> str:
        """The HTTP (gossip, health, metrics) address."""
        return f"{self.host}:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("A3REDIS_",))}
        env.update(self.own_env)
        env.update(self.extra_env)
        return env

    def start(
        self,
        wait: bool = True,
        *,
        prefix: Sequence[str] = (),
        command: Sequence[str] = NODE_COMMAND,
        **popen: Any,
    ) -> NodeProcess:
        """Start the node, its output appended to `log_path`.

        `prefix` runs it under another program (such as prlimit), `command`
        replaces `-m a3redis.node` (such as the CLI's `node --interactive`), and
        `popen` overrides Popen's arguments (stdin, stdout, text...).
        """
        assert not self.running, "already running"
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns the descriptor
        arguments: dict[str, Any] = {
            "env": self.environment(),
            "stdout": log,
            # What the caller does not take (a piped stdout, say) goes to the log.
            "stderr": log if "stdout" in popen else subprocess.STDOUT,
        }
        arguments.update(popen)
        self.process = self._launch([*prefix, sys.executable, *command], **arguments)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def _launch(self, argv: list[str], **popen: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(argv, **popen)

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://{self.gossip}/health", timeout=1) as r:
                body: dict[str, Any] = json.load(r)
                return body
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def wait_ready(self, timeout: float = 20.0, *, any_status: bool = False) -> dict[str, Any]:
        """Wait until /health says "ok" (or, with `any_status`, answers at all); its body."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"node exited with {self.process.returncode}:\n{self.output()}"
                )
            health = self.health()
            if health is not None and (any_status or health.get("status") == "ok"):
                return health
            time.sleep(0.05)
        raise AssertionError(f"node not ready within {timeout}s:\n{self.output()}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        """kill -9: no chance to flush or clean up."""
        if self.running:
            assert self.process is not None
            self.process.kill()
        if self.process is not None:
            self.process.wait(10)

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def run_node_once(
    env: Mapping[str, str], timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run a node that is expected to exit by itself (e.g. on bad configuration)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("A3REDIS_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "a3redis.node"],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "a3redis.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
