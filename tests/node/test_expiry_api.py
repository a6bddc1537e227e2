"""Keys that expire, through one node's gRPC API and the trio client."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import trio

from a3redis.client import Client, ClientError
from a3redis.core.expiry import MAX_EXPIRES_AT_MS, Condition
from a3redis.v1 import kv_pb2 as pb
from tests.node.conftest import Start
from tests.node.test_metrics import _get
from tests.storage.support import dir_size
from tests.support.node_http import parse_samples

SHORT = 0.15  # seconds: long enough to read the key back, short enough to wait out


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def raw(client: Client, method: str, request: Any) -> Any:
    """Send `request` as it is (the client checks what it sends; the node must too)."""
    return await client._call(lambda stub: getattr(stub, method)(request), idempotent=False)


async def test_a_put_with_a_ttl_reads_back_with_its_expiry_then_as_missing(client: Client) -> None:
    version = await client.put(b"session", b"s", ttl=SHORT)
    await client.put(b"forever", b"f")
    found = await client.get(b"session")
    assert found.found and found.expires_at_ms == version.wall_ms + int(SHORT * 1000)
    assert (await client.get(b"forever")).expires_at_ms == 0
    assert [e.key for e in await client.scan()] == [b"forever", b"session"]
    assert 0 < await client.ttl(b"session") <= SHORT
    assert await client.ttl(b"forever") == -1.0
    await trio.sleep(SHORT + 0.05)
    gone = await client.get(b"session")
    assert not gone.found and gone.value is None and gone.version == version
    assert [r.found for r in await client.batch_get([b"session", b"forever"])] == [False, True]
    assert [e.key for e in await client.scan()] == [b"forever"]
    assert await client.ttl(b"session") == -2.0


async def test_batch_put_takes_an_expiry_per_pair(client: Client) -> None:
    at = now_ms() + 60_000
    request = pb.BatchPutRequest(
        pairs=[
            pb.KeyValuePair(key=b"a", value=b"1", ttl_ms=30_000),
            pb.KeyValuePair(key=b"b", value=b"2", expires_at_ms=at),
            pb.KeyValuePair(key=b"c", value=b"3"),
        ]
    )
    response = await raw(client, "BatchPut", request)
    results = await client.batch_get([b"a", b"b", b"c"])
    assert results[0].expires_at_ms == response.versions[0].wall_ms + 30_000
    assert [r.expires_at_ms for r in results[1:]] == [at, 0]


async def test_expire_and_persist_rewrite_the_value_under_a_new_version(client: Client) -> None:
    first = await client.put(b"k", b"v")
    assert await client.expire(b"k", timedelta(seconds=30))
    result = await client.get(b"k")
    assert result.value == b"v" and result.version is not None and result.version > first
    assert result.expires_at_ms > now_ms() + 20_000
    assert not await client.expire(b"k", 60, Condition.NX)  # it has one already
    assert await client.expire(b"k", 60, Condition.GT)
    assert await client.persist(b"k")
    assert (await client.get(b"k")).expires_at_ms == 0
    assert not await client.persist(b"k")  # nothing to remove
    assert not await client.expire(b"missing", 30)
    assert not await client.persist(b"missing")
    # An absolute expiry already past deletes the key, as Redis's EXPIREAT does.
    changed = await raw(client, "Expire", pb.ExpireRequest(key=b"k", expires_at_ms=1))
    assert changed.set and not (await client.get(b"k")).found


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.PutRequest(key=b"k", value=b"v", ttl_ms=0), "ttl_ms is 0; it must be at least 1"),
        (pb.PutRequest(key=b"k", value=b"v", ttl_ms=-5), "ttl_ms is -5"),
        (pb.PutRequest(key=b"k", value=b"v", ttl_ms=2**63 - 1), "ttl_ms is 9223372036854775807"),
        (pb.PutRequest(key=b"k", value=b"v", expires_at_ms=-1), "expires_at_ms is -1"),
        (
            pb.PutRequest(key=b"k", value=b"v", expires_at_ms=MAX_EXPIRES_AT_MS + 1),
            f"expires_at_ms is {MAX_EXPIRES_AT_MS + 1}",
        ),
        (pb.BatchPutRequest(pairs=[pb.KeyValuePair(key=b"k", ttl_ms=0)]), "ttl_ms is 0"),
        (pb.ExpireRequest(key=b"k"), "Expire needs ttl_ms or expires_at_ms"),
        (pb.ExpireRequest(key=b"k", ttl_ms=-1), "ttl_ms is -1"),
        (
            pb.ExpireRequest(key=b"k", ttl_ms=5, condition=cast(pb.ExpireCondition, 9)),
            "unknown expire condition 9",
        ),
    ],
)
async def test_an_invalid_expiry_is_invalid_argument_and_writes_nothing(
    client: Client, request_: Any, message: str
) -> None:
    await client.put(b"k", b"before")
    method = type(request_).__name__.removesuffix("Request")
    with pytest.raises(ClientError) as caught:
        await raw(client, method, request_)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert message in caught.value.message
    expected = "INVALID_ARGUMENT" if "condition" in message else "INVALID_EXPIRY"
    assert caught.value.reason == expected
    after = await client.get(b"k")
    assert after.value == b"before" and after.expires_at_ms == 0


def test_the_client_refuses_a_ttl_below_a_millisecond() -> None:
    from a3redis.client import ttl_milliseconds

    assert ttl_milliseconds(timedelta(minutes=1)) == 60_000
    assert ttl_milliseconds(0.5) == 500
    for bad in (0, -1, 0.0001, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="at least 1 millisecond"):
            ttl_milliseconds(bad)


async def test_expired_keys_are_purged_after_the_grace_and_memory_and_disk_fall_back(
    start_node: Start,
) -> None:
    node = await start_node(TOMBSTONE_GRACE="2", COMPACT_MIN_BYTES="4096", SYNC_INTERVAL="3600")
    data_dir = Path(node.config.data_dir)
    base = f"http://127.0.0.1:{node.ports.http}"
    async with Client.connect(node.endpoint) as client:
        pairs = [pb.KeyValuePair(key=b"s%04d" % i, value=b"x" * 64, ttl_ms=100) for i in range(400)]
        written = (await raw(client, "BatchPut", pb.BatchPutRequest(pairs=pairs))).versions[0]
        await client.put(b"kept", b"k")
        metrics = parse_samples((await trio.to_thread.run_sync(_get, f"{base}/metrics"))[1])
        assert metrics[("a3redis_keys_with_ttl", ())] == 400
        disk_before = dir_size(data_dir)
        await trio.sleep(0.15)
        assert not (await client.get(b"s0001")).found
        await client.repair(wait=True)  # in the grace period still: nothing goes
        metrics = parse_samples((await trio.to_thread.run_sync(_get, f"{base}/metrics"))[1])
        if now_ms() < written.wall_ms + 100 + 2000:  # (a slow host may take longer)
            assert metrics[("a3redis_records", ())] == 401
        assert metrics[("a3redis_expired_reads_total", ())] == 1
        await trio.sleep(2.0)
        await client.repair(wait=True)  # dead for the grace, no other replica: purged
        metrics = parse_samples((await trio.to_thread.run_sync(_get, f"{base}/metrics"))[1])
        assert metrics[("a3redis_records", ())] == 1
        assert metrics[("a3redis_keys_with_ttl", ())] == 0
        assert metrics[("a3redis_expired_purged_total", ())] == 400
        assert [e.key for e in await client.scan()] == [b"kept"]
        # The purge's commit compacts (the log is far over twice the live data).
        with trio.fail_after(10):
            while dir_size(data_dir) * 4 > disk_before:
                await trio.sleep(0.05)
