"""a3redis.net.h2_tuning changes no byte on the wire and no answer of hpack's table search.

The stock code is the oracle: hpack's own search, and h2 with its outbound
normalisation and validation on. A node's connection handler survives a
client that sends garbage instead of HTTP/2.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import trio
from hpack.table import HeaderTable
from hypothesis import given
from hypothesis import strategies as st
from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.connection import GRPCConnection
from purerpc.grpclib.status import Status, StatusCode

from a3redis.client import Client
from a3redis.net import h2_tuning
from tests.node.conftest import RunningNode

STATIC_NAMES = sorted({name for name, _ in HeaderTable.STATIC_TABLE})
STATIC_VALUES = sorted({value for _, value in HeaderTable.STATIC_TABLE})
names = st.one_of(st.sampled_from(STATIC_NAMES), st.sampled_from([b"x-a", b"x-b"]), st.binary())
values = st.one_of(st.sampled_from(STATIC_VALUES), st.sampled_from([b"", b"1", b"2"]), st.binary())


@given(
    added=st.lists(st.tuples(names, values), max_size=30),
    maxsize=st.sampled_from([0, 64, 4096]),
    query=st.tuples(names, values),
)
def test_indexed_search_answers_as_hpacks_own(
    added: list[tuple[bytes, bytes]], maxsize: int, query: tuple[bytes, bytes]
) -> None:
    table = HeaderTable()
    table.maxsize = maxsize
    for name, value in added:
        table.add(name, value)
    candidates = [query, *added, *HeaderTable.STATIC_TABLE[::7]]
    for name, value in candidates:
        assert h2_tuning.indexed_search(table, name, value) == h2_tuning.stock_search(
            table, name, value
        )


def _connected_pair(trusted: bool) -> tuple[GRPCConnection, GRPCConnection, list[bytes]]:
    client = GRPCConnection(GRPCConfiguration(client_side=True))
    server = GRPCConnection(GRPCConfiguration(client_side=False))
    if trusted:
        for connection in (client, server):
            config = connection.h2_connection.config
            config.normalize_outbound_headers = config.validate_outbound_headers = False
    wire: list[bytes] = []

    def deliver(source: GRPCConnection, target: GRPCConnection) -> list[Any]:
        data = source.data_to_send()
        wire.append(data)
        return list(target.receive_data(data))

    client.initiate_connection()
    server.initiate_connection()
    deliver(client, server)
    deliver(server, client)
    deliver(client, server)
    return client, server, wire


def _calls(trusted: bool) -> tuple[list[bytes], list[str]]:
    """Three calls (OK, an error with a message, OK): every byte sent, every event seen."""
    client, server, wire = _connected_pair(trusted)
    seen: list[str] = []

    def deliver(source: GRPCConnection, target: GRPCConnection) -> None:
        data = source.data_to_send()
        wire.append(data)
        seen.extend(repr(event) for event in target.receive_data(data))

    message = b"\x00\x00\x00\x00\x05hello"
    statuses = [
        Status(StatusCode.OK),
        Status(StatusCode.INVALID_ARGUMENT, status_message="key 3: too long (max 64 bytes)"),
        Status(StatusCode.OK),
    ]
    for method, status in zip(["Put", "Get", "Apply"], statuses, strict=True):
        stream_id = client.get_next_available_stream_id()
        client.start_request(
            stream_id, "http", "a3redis.v1.KeyValue", method, authority="127.0.0.1:50051"
        )
        client.send_data(stream_id, message)
        client.end_request(stream_id)
        deliver(client, server)
        server.start_response(stream_id, content_type_suffix="+proto")
        server.send_data(stream_id, message)
        server.end_response(stream_id, status)
        deliver(server, client)
        deliver(client, server)
    return wire, seen


def test_trusted_outbound_headers_send_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    searches: list[Callable[..., Any]] = [h2_tuning.stock_search, h2_tuning.indexed_search]
    outcomes = []
    for trusted, search in zip([False, True], searches, strict=True):
        monkeypatch.setattr(HeaderTable, "search", search)
        outcomes.append(_calls(trusted))
    (stock_wire, stock_events), (tuned_wire, tuned_events) = outcomes
    assert tuned_wire == stock_wire
    assert tuned_events == stock_events
    # The error's trailer (grpc-status and grpc-message) went over too.
    assert any("INVALID_ARGUMENT: key 3: too long" in event for event in stock_events)


async def test_a_connection_sending_garbage_ends_alone(running_node: RunningNode) -> None:
    garbage = await trio.open_tcp_stream("127.0.0.1", running_node.ports.grpc)
    await garbage.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 4)
    with trio.fail_after(5):
        while await garbage.receive_some(65536):
            pass  # the node answers with a GOAWAY (or nothing) and closes
    async with Client.connect(running_node.endpoint) as client:
        await client.put(b"after-garbage", b"still serving")
        got = await client.get(b"after-garbage")
    assert got.found and got.value == b"still serving"


def test_a_program_using_only_the_client_keeps_hpack_as_shipped() -> None:
    program = (
        "import trio\n"
        "from hpack.table import HeaderTable\n"
        "from a3redis.net.channels import ChannelPool\n"
        "from a3redis.client import Client\n"
        "stock = HeaderTable.search\n"
        "async def main():\n"
        "    async with ChannelPool.open():\n"
        "        pass\n"
        "trio.run(main)\n"
        "assert HeaderTable.search is stock, 'the client patched hpack'\n"
        "assert Client is not None\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
