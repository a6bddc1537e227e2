"""Real node processes for tests: start, wait until ready, signal, restart, clean up.

Rules: every process a test starts is stopped by the fixture that started it,
even when the test fails (kill -9 by PID as a last resort); traffic goes to
127.0.0.1 only; waiting is bounded in time and fails with the node's output.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class NodeProcess:
    """One `python -m a3redis.node` process with a fixed identity, ports and DATA_DIR."""

    def __init__(self, data_dir: Path, log_path: Path, env: Mapping[str, str] | None = None):
        self.data_dir = data_dir
        self.log_path = log_path
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("A3REDIS_",))}
        env.update(
            GRPC_PORT=str(self.grpc_port),
            GOSSIP_PORT=str(self.http_port),
            DATA_DIR=str(self.data_dir),
            BIND_HOST=HOST,
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def start(self, wait: bool = True) -> NodeProcess:
        assert self.process is None or self.process.poll() is not None, "already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns the descriptor
        self.process = subprocess.Popen(
            [sys.executable, "-m", "a3redis.node"],
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.http_port}/health", timeout=1) as r:
                body: dict[str, Any] = json.load(r)
                return body
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"node exited with {self.process.returncode}:\n{self.output()}"
                )
            health = self.health()
            if health is not None and health.get("status") == "ok":
                return
            time.sleep(0.05)
        raise AssertionError(f"node not ready within {timeout}s:\n{self.output()}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = 10.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        """kill -9: no chance to flush or clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
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
        [sys.executable, "-m", "a3redis.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
