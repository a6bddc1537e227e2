"""The public gRPC API of one node, through the trio client, on real sockets."""

from __future__ import annotations

import pytest

from a3redis.client import Client, ClientError
from a3redis.core.consistency import Consistency
from tests.node.conftest import RunningNode


async def test_put_get_delete_roundtrip(client: Client) -> None:
    first = await client.put(b"k", b"v1")
    second = await client.put(b"k", b"v2")
    assert second > first
    result = await client.get(b"k")
    assert (result.found, result.value, result.version) == (True, b"v2", second)

    tombstone = await client.delete(b"k")
    assert tombstone > second
    gone = await client.get(b"k")
    assert not gone.found and gone.value is None
    assert gone.version == tombstone  # a deleted key reports its tombstone's version
    assert not (await client.get(b"never-written")).found


async def test_every_consistency_level_reads_the_local_store(client: Client) -> None:
    await client.put(b"key", b"value", Consistency.ALL)
    for level in Consistency:
        assert (await client.get(b"key", level)).value == b"value"


async def test_empty_value_is_a_value_not_a_delete(client: Client) -> None:
    await client.put(b"empty", b"")
    result = await client.get(b"empty")
    assert result.found and result.value == b""


async def test_scan_pages_bounds_prefix_and_limit(client: Client) -> None:
    pairs = [(f"user:{i:04d}".encode(), str(i).encode()) for i in range(600)]
    await client.batch_put(pairs)
    await client.batch_put([(b"order:1", b"o"), (b"zzz", b"z")])
    await client.delete(b"user:0005")

    everything = await client.scan()
    keys = [entry.key for entry in everything]
    assert keys == sorted(keys) and len(keys) == 601  # across several pages, minus the delete
    assert b"user:0005" not in keys

    users = await client.scan(prefix=b"user:")
    assert len(users) == 599 and all(e.key.startswith(b"user:") for e in users)

    window = await client.scan(start=b"user:0100", end=b"user:0110")
    assert [e.key for e in window] == [f"user:{i:04d}".encode() for i in range(100, 110)]

    limited = await client.scan(prefix=b"user:", limit=300)
    assert [e.key for e in limited] == [e.key for e in users[:300]]
    assert limited[0].value == b"0"


async def test_batch_put_and_get_keep_request_order(client: Client) -> None:
    versions = await client.batch_put([(b"b", b"1"), (b"a", b"2"), (b"b", b"3")])
    assert len(versions) == 3 and versions[0] < versions[2]
    results = await client.batch_get([b"b", b"missing", b"a"])
    assert [(r.key, r.found, r.value) for r in results] == [
        (b"b", True, b"3"),
        (b"missing", False, None),
        (b"a", True, b"2"),
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (b"", b"v", "key must not be empty"),
        (b"k" * 65, b"v", "MAX_KEY_BYTES=64"),
        (b"k", b"v" * 1001, "MAX_VALUE_BYTES=1000"),
    ],
)
async def test_bad_input_is_invalid_argument_and_changes_nothing(
    client: Client, key: bytes, value: bytes, message: str
) -> None:
    await client.put(b"k", b"kept")
    before = await client.scan()
    with pytest.raises(ClientError) as put_error:
        await client.put(key, value)
    assert put_error.value.code == "INVALID_ARGUMENT"
    assert message in put_error.value.message
    with pytest.raises(ClientError) as batch_error:
        await client.batch_put([(b"fine", b"v"), (key, value)])
    assert batch_error.value.code == "INVALID_ARGUMENT"
    assert "pair 1" in batch_error.value.message
    assert await client.scan() == before


async def test_key_of_exactly_the_limit_is_accepted(client: Client) -> None:
    await client.put(b"k" * 64, b"v" * 1000)
    assert (await client.get(b"k" * 64)).value == b"v" * 1000


async def test_describe_reports_identity_and_bound_ports(
    client: Client, running_node: RunningNode
) -> None:
    info = await client.describe()
    assert info.node_id == "node-1"
    assert info.grpc_address == f"127.0.0.1:{running_node.ports.grpc}"
    assert info.gossip_address == f"127.0.0.1:{running_node.ports.http}"
    assert info.replication_factor == running_node.config.replication_factor
