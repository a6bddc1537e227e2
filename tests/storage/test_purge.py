"""Purging tombstones: durable, exact, and never touching a newer write."""

from __future__ import annotations

from pathlib import Path

from a3redis.storage import codec
from a3redis.storage.store import Store
from tests.support.records import rec


async def test_a_purged_tombstone_is_gone_after_a_restart(tmp_path: Path) -> None:
    async with Store.open(tmp_path) as store:
        await store.apply_many([rec(b"a", b"1", 1), rec(b"b", b"2", 2)])
        await store.apply_many([rec(b"a", None, 3), rec(b"b", None, 4)])
        assert {t.key for t in store.tombstones()} == {b"a", b"b"}
        assert await store.purge([rec(b"a", None, 3)]) == 1
        assert store.get(b"a") is None
        assert [t.key for t in store.tombstones()] == [b"b"]
    async with Store.open(tmp_path) as store:
        assert store.get(b"a") is None
        assert store.get(b"b") == rec(b"b", None, 4)
        # A purged key takes new writes like any absent key.
        assert await store.apply(rec(b"a", b"again", 5))
    async with Store.open(tmp_path) as store:
        assert store.get(b"a") == rec(b"a", b"again", 5)


async def test_purge_leaves_a_key_that_was_written_again(tmp_path: Path) -> None:
    async with Store.open(tmp_path) as store:
        await store.apply(rec(b"k", None, 1))
        await store.apply(rec(b"k", b"newer", 2))
        assert await store.purge([rec(b"k", None, 1)]) == 0
        assert await store.purge([rec(b"missing", None, 1)]) == 0
        assert store.get(b"k") == rec(b"k", b"newer", 2)


async def test_purges_survive_compaction(tmp_path: Path) -> None:
    async with Store.open(tmp_path, compact_min_bytes=4096) as store:
        await store.apply_many([rec(b"k%d" % i, None, i + 1) for i in range(50)])
        assert await store.purge(store.tombstones()) == 50
        for round_number in range(60):  # enough log to trigger compaction
            await store.apply(rec(b"live", b"x" * 100, 1000 + round_number))
    async with Store.open(tmp_path) as store:
        assert store.tombstones() == []
        assert store.stats().keys == 1


def test_a_purge_entry_survives_its_encoding() -> None:
    purge = codec.Purge(b"key", None, rec(b"key", None, 7).version)
    decoded = codec.decode_file(
        codec.encode_file(codec.FileKind.LOG, 99, [purge]), codec.FileKind.LOG
    )
    assert decoded.records == [purge]
    assert isinstance(decoded.records[0], codec.Purge)


async def test_a_handed_off_value_is_purged_for_good_unless_written_again(
    tmp_path: Path,
) -> None:
    # Handoff drops copies of values (not only tombstones) once their owners hold them.
    async with Store.open(tmp_path) as store:
        await store.apply_many([rec(b"gone", b"1", 1), rec(b"kept", b"2", 2)])
        await store.apply(rec(b"kept", b"newer", 3))
        assert await store.purge([rec(b"gone", b"1", 1), rec(b"kept", b"2", 2)]) == 1
        assert store.get(b"gone") is None
        assert store.get(b"kept") == rec(b"kept", b"newer", 3)
        assert store.stats().live_keys == 1
    async with Store.open(tmp_path) as store:
        assert store.get(b"gone") is None
        assert store.get(b"kept") == rec(b"kept", b"newer", 3)


async def test_expired_values_are_dead_candidates_and_purge_like_tombstones(tmp_path: Path) -> None:
    expiring = rec(b"e", b"v", 1)._replace(expires_at_ms=100)
    later = rec(b"f", b"v", 2)._replace(expires_at_ms=500)
    async with Store.open(tmp_path) as store:
        await store.apply_many([expiring, later, rec(b"plain", b"v", 3), rec(b"t", None, 4)])
        assert store.expiring_keys == 2
        assert {r.key for r in store.dead(99)} == {b"t"}
        assert {r.key for r in store.dead(100)} == {b"t", b"e"}
        assert await store.purge([expiring]) == 1
        assert store.expiring_keys == 1 and store.get(b"e") is None
    async with Store.open(tmp_path) as store:
        assert store.get(b"e") is None
        assert store.get(b"f") == later
        assert store.expiring_keys == 1
