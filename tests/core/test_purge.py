"""Tombstones go only after the grace period and once every replica is known to hold them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from a3redis.core.hlc import Version
from a3redis.core.purge import purgeable
from a3redis.core.record import Record

GRACE = 1000
REPLICAS = {0: ["b", "c"], 1: ["b"]}


def tomb(key: bytes, wall: int) -> Record:
    return Record(key, None, Version(wall, 0, "a"))


def choose(records: list[Record], now: int, confirmed: dict[tuple[int, str], int]) -> list[Record]:
    return purgeable(records, now, GRACE, lambda key: key[0] % 2, lambda p: REPLICAS[p], confirmed)


def test_grace_and_confirmation_from_every_other_replica_are_both_required() -> None:
    old = tomb(b"\x00old", 100)
    confirmed_late = {(0, "b"): 700, (0, "c"): 700}
    assert choose([old], now=1099, confirmed=confirmed_late) == []  # still in grace
    assert choose([old], now=1100, confirmed=confirmed_late) == [old]
    assert choose([old], now=5000, confirmed={(0, "b"): 700}) == []  # c never confirmed
    # Confirmed too soon after the delete: might predate it on a skewed clock.
    assert choose([old], now=5000, confirmed={(0, "b"): 599, (0, "c"): 700}) == []


def test_values_are_never_purged() -> None:
    value = Record(b"\x00v", b"x", Version(1, 0, "a"))
    assert choose([value], now=10**9, confirmed={(0, "b"): 10**9, (0, "c"): 10**9}) == []


@given(
    walls=st.lists(st.integers(0, 3000), max_size=10),
    now=st.integers(0, 6000),
    b=st.integers(-1, 6000),
    c=st.integers(-1, 6000),
)
def test_whatever_is_chosen_satisfies_the_rule(walls: list[int], now: int, b: int, c: int) -> None:
    records = [tomb(bytes([i % 2]) + b"k%d" % i, wall) for i, wall in enumerate(walls)]
    confirmed = {(0, "b"): b, (0, "c"): c, (1, "b"): b}
    for record in choose(records, now, confirmed):
        partition = record.key[0] % 2
        assert now >= record.version.wall_ms + GRACE
        for replica in REPLICAS[partition]:
            assert confirmed[(partition, replica)] >= record.version.wall_ms + GRACE // 2
