"""a3redis.net.h2_tuning with metadata: credentials and the cluster secret's per-call
signature fields stay out of HPACK's tables, and the metadata arrives as sent.

The oracle is the stock code (h2 with its outbound normalisation and validation on).
"""

from __future__ import annotations

from typing import Any

from purerpc.grpclib.config import GRPCConfiguration
from purerpc.grpclib.connection import GRPCConnection
from purerpc.grpclib.events import RequestReceived

from a3redis.net import h2_tuning

SENDER = ("x-a3-sender", "node-1")


def metadata(call: int) -> list[tuple[str, str]]:
    return [
        SENDER,
        ("x-a3-timestamp", str(1_800_000_000_000 + call)),
        ("x-a3-nonce", f"{call:032x}"),
        ("x-a3-signature", f"{call:064x}"),
        ("authorization", f"Bearer token-{call}"),
    ]


def _calls(tuned: bool) -> tuple[GRPCConnection, list[Any]]:
    client = GRPCConnection(GRPCConfiguration(client_side=True))
    server = GRPCConnection(GRPCConfiguration(client_side=False))
    if tuned:
        config = client.h2_connection.config
        config.normalize_outbound_headers = config.validate_outbound_headers = False
        h2_tuning.never_index_credentials(client.h2_connection)
        h2_tuning.never_index_credentials(client.h2_connection)  # idempotent
    received: list[Any] = []

    def deliver(source: GRPCConnection, target: GRPCConnection) -> None:
        received.extend(target.receive_data(source.data_to_send()))

    client.initiate_connection()
    server.initiate_connection()
    deliver(client, server)
    deliver(server, client)
    for call in range(5):
        stream_id = client.get_next_available_stream_id()
        client.start_request(
            stream_id,
            "http",
            "a3redis.v1.Replica",
            "Apply",
            authority="127.0.0.1:50051",
            custom_metadata=metadata(call),
        )
        deliver(client, server)
    return client, [e.custom_metadata for e in received if isinstance(e, RequestReceived)]


def _indexed_names(connection: GRPCConnection) -> set[bytes]:
    return {name for name, _ in connection.h2_connection.encoder.header_table.dynamic_entries}


def test_metadata_arrives_as_the_stock_code_sends_it() -> None:
    _, stock = _calls(tuned=False)
    _, tuned = _calls(tuned=True)
    assert tuned == stock
    assert tuned[3] == tuple(metadata(3))


def test_credentials_and_per_call_fields_never_enter_the_table() -> None:
    stock, _ = _calls(tuned=False)
    tuned, _ = _calls(tuned=True)
    per_call = {b"x-a3-timestamp", b"x-a3-nonce", b"x-a3-signature"}
    # The stock code indexes the per-call fields (and, normalising, not authorization).
    assert per_call <= _indexed_names(stock)
    assert b"authorization" not in _indexed_names(stock)
    indexed = _indexed_names(tuned)
    assert not indexed & h2_tuning.NEVER_INDEXED
    # The sender, the same on every call, is still indexed, like purerpc's own headers.
    assert b"x-a3-sender" in indexed
    assert b":path" in indexed
