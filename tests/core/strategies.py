"""Hypothesis strategies shared by the core tests.

The domains are deliberately small so that ties (equal versions, equal keys,
a tombstone and a value at the same version) come up often.
"""

from __future__ import annotations

from typing import Any

from hypothesis import Phase
from hypothesis import strategies as st

from a3redis.core.expiry import MAX_EXPIRES_AT_MS
from a3redis.core.hlc import MAX_LOGICAL, Version
from a3redis.core.record import Record

NODE_IDS = ("a", "node-1", "node-2", "z")

node_ids = st.sampled_from(NODE_IDS)

versions = st.builds(
    Version,
    wall_ms=st.integers(min_value=0, max_value=3),
    logical=st.integers(min_value=0, max_value=2),
    node_id=node_ids,
)

# Arbitrary versions, for properties that must hold far from the small domain.
wide_versions = st.builds(
    Version,
    wall_ms=st.integers(min_value=0, max_value=2**63 - 1),
    logical=st.integers(min_value=0, max_value=MAX_LOGICAL),
    node_id=st.text(min_size=1, max_size=12),
)

payloads = st.none() | st.sampled_from([b"", b"x", b"y"]) | st.binary(max_size=4)

# Keys over a four-byte alphabet share prefixes and collide often.
keys = (
    st.sampled_from([b"", b"a", b"ab", b"abc", b"b", b"\x00", b"a\xff", b"\xff"])
    | st.lists(st.sampled_from(b"\x00ab\xff"), max_size=4).map(bytes)
    | st.binary(max_size=4)
)


# Expiries: mostly none, else near the small versions' wall times (so a record
# expires before, at or after another's version) or anywhere in range.
expiries = st.just(0) | st.integers(min_value=1, max_value=6) | st.just(MAX_EXPIRES_AT_MS)


def records_of(key: bytes) -> st.SearchStrategy[Record]:
    return st.builds(
        Record, key=st.just(key), value=payloads, version=versions, expires_at_ms=expiries
    )


records = st.builds(Record, key=keys, value=payloads, version=versions, expires_at_ms=expiries)

wide_records = st.builds(
    Record,
    key=st.binary(max_size=64),
    value=st.none() | st.binary(max_size=64),
    version=wide_versions,
    expires_at_ms=st.just(0) | st.integers(min_value=1, max_value=MAX_EXPIRES_AT_MS),
)

# For state machines: skip the explain phase (it can take a minute on a failure,
# with little to add to a shrunk list of steps) and stop at the first bug.
MACHINE_SETTINGS: dict[str, Any] = {
    "phases": [phase for phase in Phase if phase is not Phase.explain],
    "report_multiple_bugs": False,
}
