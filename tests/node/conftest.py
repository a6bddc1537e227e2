"""An in-process node on ephemeral ports, with real sockets and files."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from a3redis.client import Client
from a3redis.config import Config
from a3redis.node import BoundPorts, run_node


@dataclass
class RunningNode:
    config: Config
    ports: BoundPorts
    stop: trio.Event

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"


@pytest.fixture
async def running_node(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[RunningNode]:
    env = {
        "GRPC_PORT": "0",
        "GOSSIP_PORT": "0",
        "RESP_PORT": "0",
        "DATA_DIR": str(tmp_path / "data"),
        "MAX_KEY_BYTES": "64",
        "MAX_VALUE_BYTES": "1000",
        "REPLICATION_FACTOR": "1",
    }
    config = Config.from_env(env)
    stop = trio.Event()
    ports = await nursery.start(run_node, config, stop)
    yield RunningNode(config, ports, stop)
    stop.set()


@pytest.fixture
async def client(running_node: RunningNode) -> AsyncIterator[Client]:
    async with Client.connect(running_node.endpoint) as connected:
        yield connected


Start = Callable[..., Awaitable[RunningNode]]


@pytest.fixture
async def start_node(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Start]:
    """Start in-process nodes (RF 1, FSYNC=no, every port free, RESP too) with extra
    settings; every node is stopped at the end."""
    stops: list[trio.Event] = []

    async def start(**settings: str) -> RunningNode:
        env = {
            "GRPC_PORT": "0",
            "GOSSIP_PORT": "0",
            "RESP_PORT": "0",
            "DATA_DIR": str(tmp_path / f"data{len(stops)}"),
            "REPLICATION_FACTOR": "1",
            "FSYNC": "no",
            **settings,
        }
        config = Config.from_env(env)
        stop = trio.Event()
        stops.append(stop)
        ports = await nursery.start(run_node, config, stop)
        return RunningNode(config, ports, stop)

    yield start
    for stop in stops:
        stop.set()
