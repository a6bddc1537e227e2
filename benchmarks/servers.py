"""Server processes under test: the echo server and real nodes, started and always stopped.

A `ServerSet` is the only way the harness starts a server: it remembers every
process and kills whatever is still running when the `with` block ends, even
on an error or Ctrl-C. Nodes run as `python -m a3redis.node` with a clean
environment (no a3redis settings inherited from the caller's shell) on
127.0.0.1; waiting for readiness is always bounded in time.
"""

from __future__ import annotations

import json
import os
import select
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

# Ports below the kernel's ephemeral range: one the kernel picked (bind to 0) was once
# taken as an outgoing connection's source port before its node bound it.
from tests.support.processes import free_port

HOST = "127.0.0.1"
# A node gets only these from the caller's environment: any a3redis setting
# (FSYNC, PEERS, ...) exported in the caller's shell would change what is measured.
INHERITED_VARIABLES = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "PYTHONPATH",
    "PYTHONDONTWRITEBYTECODE",
    "VIRTUAL_ENV",
)


# Every benchmark node is a cluster of one: with the default REPLICATION_FACTOR=3
# a lone node refuses QUORUM requests. Requests still go through the coordinator
# at the default consistency, as a client's would.
SINGLE_NODE_SETTINGS = {"REPLICATION_FACTOR": "1"}


class ServerError(RuntimeError):
    """A server process did not start or stop as expected; the message has its output."""


class ServerProcess:
    def __init__(
        self,
        name: str,
        process: subprocess.Popen[bytes],
        log_path: Path,
        grpc_port: int,
        http_port: int | None = None,
    ) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path
        self.grpc_port = grpc_port
        self.http_port = http_port
        # The CA that signed the node's certificate when it runs with TLS (https then).
        self.tls_ca: Path | None = None

    def open_http(self, path: str, timeout: float) -> Any:
        """urlopen of one of the node's HTTP endpoints (https with the node's CA)."""
        scheme, context = "http", None
        if self.tls_ca is not None:
            scheme, context = "https", ssl.create_default_context(cafile=str(self.tls_ca))
        url = f"{scheme}://{HOST}:{self.http_port}{path}"
        return urllib.request.urlopen(url, timeout=timeout, context=context)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def target(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    def running(self) -> bool:
        return self.process.poll() is None

    def output(self, last_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-last_chars:]
        except FileNotFoundError:
            return ""

    def health(self, timeout: float = 1.0) -> dict[str, object] | None:
        """The node's /health body if it answers 200, else None."""
        if self.http_port is None:
            raise ValueError(f"{self.name} has no HTTP port")
        try:
            with self.open_http("/health", timeout) as response:
                body: dict[str, object] = json.load(response)
                return body
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if not self.running():
                raise ServerError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.output()}"
                )
            # A listening socket that is not served yet holds the request; waiting on
            # it (rather than retrying) answers as soon as the node serves.
            body = self.health(timeout=min(remaining, 5.0))
            if body is not None and body.get("status") == "ok":
                return
            time.sleep(0.01)
        raise ServerError(f"{self.name} not healthy within {timeout}s:\n{self.output()}")

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM and wait; return seconds to exit. Kill -9 and raise if it overruns."""
        started = time.monotonic()
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise ServerError(f"{self.name} did not stop within {timeout}s") from None
        if self.process.returncode != 0:
            raise ServerError(
                f"{self.name} exited with {self.process.returncode}:\n{self.output()}"
            )
        return time.monotonic() - started

    def kill(self) -> None:
        if self.running():
            self.process.kill()
            self.process.wait(10)


class ServerSet:
    """Starts servers and guarantees they are all gone when the block exits."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._started: list[ServerProcess] = []

    def __enter__(self) -> ServerSet:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for server in self._started:
            server.kill()

    def _log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start_echo(self, timeout: float = 20.0, stock: bool = False) -> ServerProcess:
        """The echo server on a3redis's gRPC stack, or (`stock`) on purerpc as shipped."""
        name = "echo-stock" if stock else "echo"
        log_path = self._log(name)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.echo_server", *(["--stock"] if stock else [])],
                stdout=subprocess.PIPE,
                stderr=log,
            )
        server = ServerProcess(name, process, log_path, grpc_port=0)
        self._started.append(server)
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline().decode() if ready else ""
        if not line.startswith("PORT "):
            raise ServerError(f"echo server did not report its port:\n{server.output()}")
        server.grpc_port = int(line.split()[1])
        return server

    def start_node(
        self,
        name: str,
        data_dir: Path,
        settings: dict[str, str],
        *,
        ports: tuple[int, int] | None = None,
        wait_timeout: float | None = 30.0,
    ) -> ServerProcess:
        """Start `python -m a3redis.node`; wait until healthy unless wait_timeout is None."""
        grpc_port, http_port = ports or (free_port(), free_port())
        env = {k: v for k, v in os.environ.items() if k in INHERITED_VARIABLES}
        env.update(
            GRPC_PORT=str(grpc_port),
            GOSSIP_PORT=str(http_port),
            RESP_PORT=str(free_port()),
            DATA_DIR=str(data_dir),
            BIND_HOST=HOST,
            PYTHONUNBUFFERED="1",
        )
        env.update(SINGLE_NODE_SETTINGS)
        env.update(settings)
        log_path = self._log(name)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "a3redis.node"], env=env, stdout=log, stderr=log
            )
        server = ServerProcess(name, process, log_path, grpc_port, http_port)
        if "TLS_CA_FILE" in settings:
            server.tls_ca = Path(settings["TLS_CA_FILE"])
        self._started.append(server)
        if wait_timeout is not None:
            server.wait_healthy(wait_timeout)
        return server

    def start_cluster(
        self, name: str, count: int, settings: dict[str, str], timeout: float = 60.0
    ) -> list[ServerProcess]:
        """`count` nodes, each given the others as PEERS, once the first sees all alive and
        every node is ready (coordinates requests: a node that has not joined yet refuses)."""
        ports = [(free_port(), free_port()) for _ in range(count)]
        nodes = []
        for index, node_ports in enumerate(ports):
            peers = ",".join(f"{HOST}:{g}" for j, (g, _) in enumerate(ports) if j != index)
            node_settings = {"NODE_NUM": str(index + 1), **({"PEERS": peers} if peers else {})}
            node_settings.update(settings)
            nodes.append(
                self.start_node(
                    f"{name}{index + 1}",
                    self.log_dir / f"{name}{index + 1}-data",
                    node_settings,
                    ports=node_ports,
                    wait_timeout=None,
                )
            )
        deadline = time.monotonic() + timeout
        for node in nodes:
            node.wait_healthy(max(0.1, deadline - time.monotonic()))
        while time.monotonic() < deadline:
            try:
                with nodes[0].open_http("/membership", 1) as response:
                    members = json.load(response).values()
                if sum(member["status"] == "alive" for member in members) == count and all(
                    _ready(node) for node in nodes
                ):
                    return nodes
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise ServerError(
            f"{name}: {count} nodes did not all see each other and get ready within {timeout}s"
        )


def _ready(node: ServerProcess) -> bool:
    """Whether the node's /ready answers 200 (it coordinates requests)."""
    try:
        with node.open_http("/ready", 1) as answer:
            return bool(answer.status == 200)
    except OSError:  # HTTPError (503: not ready yet) included
        return False
