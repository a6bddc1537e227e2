"""Writes that several requests start in one turn share one plan, and each keeps its own answer.

The keyspace runs over a real store; the ring is a plain one of three members,
one copy of each key, `n3` down and no links (`FakeTopology`): a key placed on
a peer cannot be written, one placed on a member known to be down cannot even
be planned.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio

from a3redis.core.consistency import Consistency
from a3redis.core.errors import RequestError, UnavailableError
from a3redis.core.hlc import Version
from a3redis.core.ring import Ring
from a3redis.storage.store import FsyncPolicy, Store
from tests.support.keyspace import keyspace_over
from tests.support.topology import FakeTopology


def key_on(ring: Ring, owner: str, tag: str) -> bytes:
    return next(
        key
        for key in (f"{tag}-{i}".encode() for i in range(10_000))
        if ring.preference_list(key) == (owner,)
    )


Answers = dict[str, list[Version] | RequestError]


async def test_one_requests_unplaceable_key_fails_that_request_alone(tmp_path: Path) -> None:
    topology = FakeTopology(["n1", "n2", "n3"], factor=1, down=("n3",))
    async with Store.open(tmp_path, fsync=FsyncPolicy.NO) as store, trio.open_nursery() as nursery:
        keyspace = keyspace_over(store, topology, nursery)
        here = key_on(topology.ring, "n1", "here")
        down = key_on(topology.ring, "n3", "down")
        answers: Answers = {}
        done = trio.Event()

        def answer(name: str) -> Callable[[list[Version] | RequestError], None]:
            def record(result: list[Version] | RequestError) -> None:
                answers[name] = result
                if len(answers) == 3:
                    done.set()

            return record

        # Started in one turn: one plan for all three, which cannot be made (the key
        # on n3 has no live replica), so each is planned alone.
        keyspace.batch_write_then([(here, b"1")], Consistency.ONE, answer("first"))
        keyspace.batch_write_then([(down, b"2")], Consistency.ONE, answer("refused"))
        keyspace.batch_write_then([(here, b"3")], Consistency.ONE, answer("last"))
        with trio.fail_after(5):
            await done.wait()
        assert isinstance(answers["refused"], UnavailableError)
        first, last = answers["first"], answers["last"]
        assert isinstance(first, list) and isinstance(last, list) and first[0] < last[0]
        stored = store.get(here)
        assert stored is not None and stored.value == b"3"
        assert keyspace.stats.write_plans == 4  # the shared plan, then one per request
        nursery.cancel_scope.cancel()
