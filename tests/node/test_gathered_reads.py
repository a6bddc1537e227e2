"""Reads that several requests start in one turn, and that ask peers, share one plan.

The keyspace runs over a real store; the ring is a plain one of three members
holding every key, `n3` down, and a link to `n2` that records the reads asked of
it and answers when the test says: a QUORUM read is this node's copy and n2's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from a3redis.core.consistency import Consistency
from a3redis.core.errors import RequestError, UnavailableError
from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.storage.store import FsyncPolicy, Store
from tests.support.keyspace import keyspace_over
from tests.support.topology import FakeTopology

Settle = Callable[[list[Record | None] | None, Exception | None], None]


class RecordingLink:
    def __init__(self) -> None:
        self.reads: list[tuple[list[bytes], Settle]] = []

    def submit_read(self, keys: list[bytes], settle: Settle) -> None:
        self.reads.append((keys, settle))


class LinkedTopology(FakeTopology):
    def __init__(self) -> None:
        super().__init__(["n1", "n2", "n3"], factor=3, down=("n3",))
        self.n2 = RecordingLink()

    def link(self, member: str) -> RecordingLink | None:  # type: ignore[override]
        return self.n2 if member == "n2" else None


Answers = dict[str, list[Record | None] | RequestError]


async def test_reads_started_in_one_turn_ask_a_peer_once_and_each_gets_its_records(
    tmp_path: Path,
) -> None:
    topology = LinkedTopology()
    async with Store.open(tmp_path, fsync=FsyncPolicy.NO) as store, trio.open_nursery() as nursery:
        keyspace = keyspace_over(store, topology, nursery)
        answers: Answers = {}
        done = trio.Event()

        def answer(name: str) -> Callable[[list[Record | None] | RequestError], None]:
            def record(result: list[Record | None] | RequestError) -> None:
                answers[name] = result
                if len(answers) == 2:
                    done.set()

            return record

        keyspace.batch_get_then([b"a", b"b"], Consistency.QUORUM, answer("first"))
        with pytest.raises(UnavailableError):  # ALL needs n3: refused at once, alone
            keyspace.batch_get_then([b"c"], Consistency.ALL, answer("refused"))
        keyspace.batch_get_then([b"c", b"a"], Consistency.QUORUM, answer("second"))
        await trio.testing.wait_all_tasks_blocked()
        # One plan, one read asked of n2 for the two requests' keys.
        assert keyspace.stats.read_plans == 1
        assert [keys for keys, _ in topology.n2.reads] == [[b"a", b"b", b"c", b"a"]]
        assert answers == {}  # n2 has not answered: no request is decided
        version = Version(int(time.time() * 1000) - 1000, 0, "n2")
        keys, settle = topology.n2.reads[0]
        settle(
            [None if key == b"b" else Record(key, b"n2's " + key, version) for key in keys], None
        )
        with trio.fail_after(5):
            await done.wait()
        first, second = answers["first"], answers["second"]
        assert isinstance(first, list) and isinstance(second, list)
        assert [r and r.value for r in first] == [b"n2's a", None]
        assert [r and r.value for r in second] == [b"n2's c", b"n2's a"]
        nursery.cancel_scope.cancel()
