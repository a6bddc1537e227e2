"""A real `python -m a3redis.node` process: lifecycle, durability, bad configuration."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
import trio

from a3redis.client import Client, ClientError
from a3redis.storage.files import log_name
from tests.conftest import NodeFactory
from tests.support.processes import HOST, run_node_once


async def test_kill_9_loses_no_acknowledged_write(node_factory: NodeFactory) -> None:
    node = node_factory().start()
    # Per key: the acknowledged state (a value, or None for deleted) ...
    acknowledged: dict[bytes, bytes | None] = {}
    # ... and the write in flight when the node died, which may or may not have applied.
    in_flight: dict[bytes, bytes | None] = {}

    async def writer(client: Client, worker: int) -> None:
        # Bounded: at most 2,000 writes per worker; the kill ends the loop sooner.
        for i in range(2_000):
            key = f"w{worker}-{i % 50}".encode()
            value = None if i % 7 == 6 else f"{worker}:{i}".encode()
            in_flight[key] = value
            try:
                if value is None:
                    await client.delete(key)
                else:
                    await client.put(key, value)
            except ClientError:
                return
            acknowledged[key] = in_flight.pop(key)

    async with (
        Client.connect(node.endpoint, request_timeout=5) as client,
        trio.open_nursery() as nursery,
    ):
        for worker in range(8):
            nursery.start_soon(writer, client, worker)
        await trio.sleep(1.0)
        node.kill()
    assert len(acknowledged) > 50, "the load never got going"

    node.start()
    async with Client.connect(node.endpoint) as client:
        for key, expected in acknowledged.items():
            result = await client.get(key)
            allowed = {expected, in_flight[key]} if key in in_flight else {expected}
            assert result.value in allowed, (key, result, allowed)
            assert result.found == (result.value is not None)


async def test_sigterm_exits_zero_within_two_seconds_under_load(
    node_factory: NodeFactory,
) -> None:
    node = node_factory().start()
    acknowledged: dict[bytes, bytes] = {}

    async def writer(client: Client, worker: int) -> None:
        for i in range(5_000):
            key, value = f"k{worker}-{i}".encode(), b"v" * 100
            try:
                await client.put(key, value)
            except ClientError:
                return
            acknowledged[key] = value

    async with (
        Client.connect(node.endpoint, request_timeout=5) as client,
        trio.open_nursery() as nursery,
    ):
        for worker in range(16):
            nursery.start_soon(writer, client, worker)
        await trio.sleep(0.5)
        node.signal(signal.SIGTERM)
        sent = time.monotonic()
        code = await trio.to_thread.run_sync(node.wait_exit)
        elapsed = time.monotonic() - sent
    assert code == 0, node.output()
    assert elapsed < 2.0, f"took {elapsed:.2f}s to stop"
    assert "stopped cleanly" in node.output()

    node.start()
    async with Client.connect(node.endpoint) as client:
        results = await client.batch_get(list(acknowledged))
        assert all(r.found and r.value == acknowledged[r.key] for r in results)


def test_sigint_also_stops_cleanly(node_factory: NodeFactory) -> None:
    node = node_factory().start()
    node.signal(signal.SIGINT)
    assert node.wait_exit() == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GRPC_PORT", "not-a-port"),
        ("GOSSIP_PORT", "70000"),
        ("NODE_NUM", "0"),
        ("FSYNC", "sometimes"),
        ("REPLICATION_FACTOR", "zero"),
        ("MAX_VALUE_BYTES", "-5"),
        ("PEERS", "127.0.0.1"),
    ],
)
def test_bad_env_var_exits_2_naming_it(tmp_path: Path, variable: str, value: str) -> None:
    result = run_node_once({variable: value, "DATA_DIR": str(tmp_path / "d")})
    assert result.returncode == 2
    assert variable in result.stderr
    assert "expected" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing was started or created.
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("taken", ["GRPC_PORT", "GOSSIP_PORT", "RESP_PORT"])
def test_taken_port_fails_at_start(node_factory: NodeFactory, taken: str) -> None:
    node = node_factory()
    port = {"GRPC_PORT": node.grpc_port, "GOSSIP_PORT": node.http_port, "RESP_PORT": node.resp_port}
    with socket.socket() as squatter:
        squatter.bind((HOST, port[taken]))
        squatter.listen()
        node.start(wait=False)
        code = node.wait_exit(timeout=20)
    assert code == 1
    assert taken in node.output()
    assert "in use" in node.output()


def test_second_node_on_same_grpc_port_fails(node_factory: NodeFactory) -> None:
    first = node_factory("first").start()
    second = node_factory("second", GRPC_PORT=str(first.grpc_port))
    second.start(wait=False)
    assert second.wait_exit(timeout=20) == 1
    assert "GRPC_PORT" in second.output()
    assert first.health() is not None


def test_second_process_on_same_data_dir_fails(node_factory: NodeFactory) -> None:
    first = node_factory("first").start()
    second = node_factory("second", DATA_DIR=str(first.data_dir))
    second.start(wait=False)
    assert second.wait_exit(timeout=20) == 1
    assert "in use by another a3redis process" in second.output()
    assert first.health() is not None


async def test_corrupt_middle_record_stops_start_naming_file_and_offset(
    node_factory: NodeFactory,
) -> None:
    node = node_factory().start()
    async with Client.connect(node.endpoint) as client:
        for i in range(20):
            await client.put(f"key-{i}".encode(), b"x" * 50)
    assert node.stop() == 0
    log_file = node.data_dir / log_name(1)
    data = bytearray(log_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log_file.write_bytes(bytes(data))

    node.start(wait=False)
    assert node.wait_exit(timeout=20) == 1
    output = node.output()
    assert log_name(1) in output
    assert "offset" in output
    assert "Traceback" not in output
