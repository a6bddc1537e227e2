"""A checked Stream page applied by the keyspace: stored with its payloads, and the clock
moved past the page's greatest version, as if it had passed each record's in turn.

The keyspace runs over a real store (`tests.support.keyspace`).
"""

from __future__ import annotations

import time
from pathlib import Path

import trio

from a3redis.core.hlc import Version
from a3redis.core.record import ApplyOutcome, Record
from a3redis.core.streaming import StreamPage
from a3redis.storage import codec
from a3redis.storage.store import FsyncPolicy, Store
from tests.support.keyspace import keyspace_over
from tests.support.topology import FakeTopology


async def test_a_page_is_stored_and_the_clock_passes_its_greatest_version(
    tmp_path: Path,
) -> None:
    now = int(time.time() * 1000)
    ahead = now + 20_000  # within the clock-skew bound
    records = [
        Record(b"a", b"1", Version(ahead, 7, "n2")),
        Record(b"b", None, Version(ahead, 9, "n3")),  # the greatest: passed last of all
        Record(b"c", b"3", Version(now - 1_000, 0, "n2"), now + 60_000),
    ]
    page = StreamPage(records, None, payloads=[codec.encode_payload(r) for r in records])
    topology = FakeTopology(["n1"], factor=1)
    async with trio.open_nursery() as nursery:
        async with Store.open(tmp_path, fsync=FsyncPolicy.NO) as store:
            keyspace = keyspace_over(store, topology, nursery)
            outcomes = await keyspace.apply_stream_page(page, now)
            assert outcomes == [ApplyOutcome.STORED] * 3
            assert [store.get(r.key) for r in records] == records
            # An older copy of a key that is already here is not stored again.
            older = StreamPage([Record(b"a", b"0", Version(now - 5_000, 0, "n2"))], None)
            assert await keyspace.apply_stream_page(older, now) == [ApplyOutcome.SUPERSEDED]
            assert store.get(b"a") == records[0]
            assert await keyspace.apply_stream_page(StreamPage([], None), now) == []
            issued = keyspace.clock.now(now)
            nursery.cancel_scope.cancel()
        async with Store.open(tmp_path, fsync=FsyncPolicy.NO) as store:
            assert [store.get(r.key) for r in records] == records
    assert issued > Version(ahead, 9, "n3")
