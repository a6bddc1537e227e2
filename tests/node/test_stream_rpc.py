"""The Replica Stream call against a real node: whole partitions, paged, as reads see them.

grpcio's blocking client runs in a worker thread so the in-process node keeps
serving on the trio loop.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio

from a3redis.api.replica_calls import ReplicaCalls
from a3redis.client import Client
from a3redis.cluster.peers import PeerLink, PeerUnavailableError, RefusedPageError
from a3redis.config import Config
from a3redis.core.record import Record
from a3redis.core.ring import DEFAULT_PARTITIONS, partition_of
from a3redis.core.streaming import (
    MAX_STREAM_PARTITIONS,
    MAX_STREAM_RECORDS,
    StreamPage,
    StreamRequest,
    next_request,
)
from a3redis.core.validation import MAX_PEER_RESPONSE_BYTES, Limits, record_bytes
from a3redis.net.address import Address
from a3redis.net.channels import ChannelPool
from a3redis.node import run_node
from a3redis.runtime.wall_clock import wall_ms
from a3redis.storage import codec
from a3redis.v1 import replica_pb2 as rpb

MIB = 1024 * 1024
LIMITS = Limits()  # the node's, at the defaults


def node_config(data_dir: Path, **env: str) -> Config:
    return Config.from_env(
        {
            "GRPC_PORT": "0",
            "GOSSIP_PORT": "0",
            "RESP_PORT": "0",
            "DATA_DIR": str(data_dir),
            "REPLICATION_FACTOR": "1",
            "FSYNC": "no",
            "SYNC_INTERVAL": "3600",  # no repair round builds the Merkle index meanwhile
            **env,
        }
    )


@asynccontextmanager
async def serving(config: Config) -> AsyncIterator[tuple[str, PeerLink]]:
    """A node, and a peer link to its Replica service as another member ("node-9") has."""
    stop = trio.Event()
    async with ChannelPool.open() as channels, trio.open_nursery() as nursery:
        ports = await nursery.start(run_node, config, stop)
        address = Address("127.0.0.1", ports.grpc)
        link = PeerLink("node-1", ReplicaCalls(channels, address, "node-9"), 30)
        await nursery.start(link.run)
        yield str(address), link
        link.close()
        stop.set()


async def stream(link: PeerLink, request: StreamRequest) -> tuple[list[Record], list[StreamPage]]:
    """Every page of `request`, as a joining node takes them; asked again while building."""
    records: list[Record] = []
    pages: list[StreamPage] = []
    following: StreamRequest | None = request
    with trio.fail_after(30):
        while following is not None:
            page, _ = await link.stream(following, LIMITS, wall_ms)
            pages.append(page)
            if page.building:
                await trio.sleep(0.05)
            records.extend(page.records)
            following = next_request(following, page)
    return records, pages


def keys_of_partition(partition: int, count: int, prefix: bytes = b"big-") -> list[bytes]:
    found: list[bytes] = []
    number = 0
    while len(found) < count:
        key = prefix + b"%d" % number
        if partition_of(key, DEFAULT_PARTITIONS) == partition:
            found.append(key)
        number += 1
    return found


async def test_pages_carry_exactly_the_records_of_the_partitions_tombstones_included(
    tmp_path: Path,
) -> None:
    crowded = 1234  # a partition of several keys, their order within it checked
    keys = [b"key-%03d" % n for n in range(300)] + keys_of_partition(crowded, 7, b"crowd-")
    deleted = keys[::5]
    async with serving(node_config(tmp_path)) as (endpoint, link):
        async with Client.connect(endpoint) as client:
            for key in keys:
                await client.put(key, b"value of " + key)
            for key in deleted:
                await client.delete(key)
        chosen = {partition_of(key, DEFAULT_PARTITIONS) for key in keys[:60:4]} | {crowded}
        empty = next(
            p for p in range(DEFAULT_PARTITIONS) if all(partition_of(k) != p for k in keys)
        )
        partitions = tuple(sorted({*chosen, empty}))
        expected = sorted(
            (key for key in keys if partition_of(key, DEFAULT_PARTITIONS) in chosen),
            key=lambda key: (partition_of(key, DEFAULT_PARTITIONS), key),
        )

        records, pages = await stream(link, StreamRequest(partitions, b"", 3))

        # The first call finds no Merkle index: it is built meanwhile, and asked again.
        assert pages[0].building and not pages[-1].building
        assert [record.key for record in records] == expected
        tombstones = {record.key for record in records if record.value is None}
        assert tombstones == set(expected) & set(deleted) != set()
        assert all(r.value == b"value of " + r.key for r in records if r.key not in tombstones)
        assert max(len(page.records) for page in pages) == 3
        # The pages came as payloads, each exactly its record's encoding (what the
        # joining node logs as it is).
        assert all(
            page.payloads == [codec.encode_payload(record) for record in page.records]
            for page in pages
            if not page.building
        )
        # A partition named twice or out of order is the peer's refusal: the link raises.
        with pytest.raises(PeerUnavailableError, match="strictly ascending"):
            await link.stream(StreamRequest((5, 5)), LIMITS, wall_ms)


async def test_a_large_partition_pages_within_the_peer_response_limit(tmp_path: Path) -> None:
    partition = 77
    keys = keys_of_partition(partition, 40)
    async with serving(node_config(tmp_path)) as (endpoint, link):
        async with Client.connect(endpoint, request_timeout=30) as client:
            for key in keys:
                await client.put(key, bytes(MIB))
        records, pages = await stream(link, StreamRequest((partition,), b"", MAX_STREAM_RECORDS))
    assert [record.key for record in records] == sorted(keys)
    sizes = [len(page.records) for page in pages if not page.building]
    assert sizes == [MAX_PEER_RESPONSE_BYTES // (MIB + len(keys[0])), 40 - sizes[0]]
    assert all(sum(map(record_bytes, page.records)) <= MAX_PEER_RESPONSE_BYTES for page in pages)


async def test_a_record_beyond_the_clock_skew_bound_is_not_streamed(tmp_path: Path) -> None:
    ahead, now = b"written-ahead", b"written-now"
    assert partition_of(ahead, DEFAULT_PARTITIONS) != partition_of(now, DEFAULT_PARTITIONS)
    partitions = tuple(sorted(partition_of(key, DEFAULT_PARTITIONS) for key in (ahead, now)))
    # Written by this node while its clock ran two minutes ahead (MAX_CLOCK_SKEW is one).
    skewed = node_config(tmp_path, A3REDIS_CLOCK_OFFSET_MS="120000")
    async with serving(skewed) as (endpoint, _), Client.connect(endpoint) as client:
        await client.put(ahead, b"from the future")
    async with serving(node_config(tmp_path)) as (endpoint, link):
        async with Client.connect(endpoint) as client:
            await client.put(now, b"v")
        records, _ = await stream(link, StreamRequest(partitions))
    assert [record.key for record in records] == [now]


class Mislabelled(ReplicaCalls):
    """A peer whose pages carry a record of a partition that was not asked for."""

    discarded = False

    def discard(self) -> None:
        self.discarded = True
        super().discard()

    async def stream(self, request: StreamRequest) -> StreamPage:
        page = await super().stream(request)
        return StreamPage([*page.records, page.records[0]._replace(key=b"elsewhere")], None)


class Garbled(ReplicaCalls):
    """A peer whose Stream answers carry payloads with a byte changed."""

    async def _call(self, method: str, request: Any) -> Any:
        response = await super()._call(method, request)
        if method == "Stream" and response.record_payloads:
            garbled = bytearray(response.record_payloads)
            garbled[4] = codec.KIND_PURGE  # the first record's kind
            response.record_payloads = bytes(garbled)
        return response


async def refused_page(
    tmp_path: Path, calls_type: type[ReplicaCalls]
) -> tuple[PeerUnavailableError, ReplicaCalls]:
    """How a link over `calls_type` refuses the page of a partition of one key."""
    key = b"only-key"
    request = StreamRequest((partition_of(key, DEFAULT_PARTITIONS),))
    async with serving(node_config(tmp_path)) as (endpoint, honest):
        async with Client.connect(endpoint) as client:
            await client.put(key, b"v")
        await stream(honest, request)  # the index is built
        async with ChannelPool.open() as channels:
            calls = calls_type(channels, Address.parse(endpoint), "node-9")
            link = PeerLink("node-1", calls, 30)
            with pytest.raises(PeerUnavailableError) as refused:
                await link.stream(request, LIMITS, wall_ms)
    return refused.value, calls


async def test_a_page_that_fails_the_checks_is_refused_and_the_connection_kept(
    tmp_path: Path,
) -> None:
    error, calls = await refused_page(tmp_path, Mislabelled)
    assert isinstance(error, RefusedPageError)
    assert "record 1 is of partition" in str(error)
    assert error.error.reason == "wrong_key"
    assert isinstance(calls, Mislabelled) and not calls.discarded


async def test_a_page_of_malformed_payloads_is_refused(tmp_path: Path) -> None:
    error, _ = await refused_page(tmp_path, Garbled)
    assert re.search(r"a malformed Stream answer: .*unknown kind 3", str(error))


def _stream_answers(endpoint: str, requests: Sequence[rpb.StreamRequest]) -> list[Any]:
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(
            "/a3redis.v1.Replica/Stream",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=rpb.StreamResponse.FromString,
        )
        return [call(request, timeout=10) for request in requests]


async def test_a_requester_of_an_older_release_gets_record_messages(tmp_path: Path) -> None:
    """Only a request that asks for payloads gets them: a node of a release before
    them asks without the field, and takes the page's records as messages."""
    keys = [b"k%d" % n for n in range(20)]
    partitions = sorted({partition_of(key, DEFAULT_PARTITIONS) for key in keys})
    async with serving(node_config(tmp_path)) as (endpoint, link):
        async with Client.connect(endpoint) as client:
            for key in keys:
                await client.put(key, b"v" + key)
            await client.delete(keys[0])
        await stream(link, StreamRequest(tuple(partitions)))  # the index is built
        older, newer = await trio.to_thread.run_sync(
            _stream_answers,
            endpoint,
            [
                rpb.StreamRequest(partitions=partitions, ring_partitions=DEFAULT_PARTITIONS),
                rpb.StreamRequest(
                    partitions=partitions, ring_partitions=DEFAULT_PARTITIONS, payloads=True
                ),
            ],
        )
    assert len(older.records) == len(keys) and not older.record_payloads
    assert not newer.records
    decoded, _ = codec.unpack_payloads(newer.record_payloads, len(keys))
    assert [
        (r.key, None if r.tombstone else r.value, r.version.wall_ms) for r in older.records
    ] == [(r.key, r.value, r.version.wall_ms) for r in decoded]
    assert [r.key for r in decoded if r.value is None] == [keys[0]]  # the tombstone


def _hostile(endpoint: str, requests: Sequence[rpb.StreamRequest]) -> list[tuple[Any, str]]:
    answers = []
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(
            "/a3redis.v1.Replica/Stream",
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=rpb.StreamResponse.FromString,
        )
        for request in requests:
            try:
                call(request, timeout=10)
                answers.append((grpc.StatusCode.OK, ""))
            except grpc.RpcError as error:
                answers.append((error.code(), error.details() or ""))
    return answers


async def test_hostile_requests_are_invalid_argument_naming_the_bound(tmp_path: Path) -> None:
    ring = DEFAULT_PARTITIONS

    def request(**fields: Any) -> rpb.StreamRequest:
        return rpb.StreamRequest(**{"partitions": [1], "ring_partitions": ring, **fields})

    cases = {
        "names a ring of 0 partitions; this node's ring has 4096": rpb.StreamRequest(
            partitions=[1]
        ),
        "asks for 0 partitions": request(partitions=[]),
        "asks for 1000000 partitions; the limit is 1 to MAX_STREAM_PARTITIONS=4096": request(
            partitions=[0] * 1_000_000
        ),
        f"partition 1 is {ring}; this node's ring has partitions 0 to {ring - 1}": request(
            partitions=[0, ring]
        ),
        "strictly ascending: partition 2 is 3, after 9": request(partitions=[1, 9, 3]),
        "start_key is 1025 bytes; the limit is MAX_KEY_BYTES=1024": request(start_key=b"k" * 1025),
        "asks for 8193 records per page; the limit is MAX_STREAM_RECORDS=8192": request(
            max_records=MAX_STREAM_RECORDS + 1
        ),
    }
    assert ring == MAX_STREAM_PARTITIONS
    async with serving(node_config(tmp_path)) as (endpoint, _):
        answers = await trio.to_thread.run_sync(_hostile, endpoint, list(cases.values()))
        # Still serving, and a request at the bounds is answered.
        [answer] = await trio.to_thread.run_sync(
            _hostile,
            endpoint,
            [request(partitions=range(ring), start_key=b"k" * 1024, max_records=8192)],
        )
    assert answer == (grpc.StatusCode.OK, "")
    for (code, details), message in zip(answers, cases, strict=True):
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (message, details)
        assert message in details


async def test_a_busy_source_paces_its_pages_but_never_near_the_callers_timeout(
    tmp_path: Path,
) -> None:
    partition = 31
    keys = keys_of_partition(partition, 40)
    # One key a second while busy: each page of 20 keys would be due 20 s after the last.
    config = node_config(tmp_path, STREAM_BUSY_KEYS_PER_SECOND="1", PEER_TIMEOUT="2")
    async with serving(config) as (endpoint, link), Client.connect(endpoint) as client:
        for key in keys:
            await client.put(key, b"v")
        records, _ = await stream(link, StreamRequest((partition,), b"", 20))
        assert len(records) == 40
        # Busy: more than 20 client requests a second over a whole window.
        with trio.move_on_after(1.2):
            for n in range(1000):  # bounded
                await client.get(b"k%d" % n)
        request = StreamRequest((partition,), b"", 20)
        started = trio.current_time()
        first, _ = await link.stream(request, LIMITS, wall_ms)
        second, _ = await link.stream(next_request(request, first) or request, LIMITS, wall_ms)
        waited = trio.current_time() - started
    assert len(first.records) == len(second.records) == 20
    # The second page was held back (paced) but not beyond PEER_TIMEOUT / 4 = 0.5 s.
    assert 0.4 <= waited < 1.5
