"""The hybrid logical clock only ever moves forward, whatever the wall clock does or it observes.

It never fails: a spent logical counter moves the wall component on by 1 ms.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from a3redis.core.hlc import MAX_LOGICAL, HybridLogicalClock, Version
from tests.core.strategies import MACHINE_SETTINGS, wide_versions

NODE = "node-m"

# Wall-clock steps: mostly small (so versions collide on wall_ms and the logical
# counter works), sometimes big jumps forwards or backwards.
wall_steps = st.integers(-3, 3) | st.integers(-(10**9), 10**9)
remote_nodes = st.sampled_from(["a", NODE, "node-z", "zzz"])
remote_logicals = st.integers(0, 5) | st.sampled_from([MAX_LOGICAL - 1, MAX_LOGICAL])
# What an unchecked caller might pass: counters beyond the wire's uint32.
any_logicals = remote_logicals | st.integers(MAX_LOGICAL + 1, 2**64)


class ClockMachine(RuleBasedStateMachine):
    """A clock driven by arbitrary `now` and `observe` calls, against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = HybridLogicalClock(NODE)
        self.wall = 0
        # The greatest version the clock returned or observed so far.
        self.greatest: Version | None = None
        # The greatest wall time the clock was given, saw in a remote version or
        # issued (a spent counter moves it on by 1 ms); a new clock starts at 0.
        self.greatest_wall = 0
        self.last_issued: Version | None = None

    @initialize(start=st.integers(-(10**6), 2**45))
    def start_wall(self, start: int) -> None:
        self.wall = start

    def _see_wall(self, wall_ms: int) -> None:
        self.greatest_wall = max(self.greatest_wall, wall_ms)

    def _see(self, version: Version) -> None:
        self.greatest = version if self.greatest is None else max(self.greatest, version)

    @rule(step=wall_steps)
    def move_wall(self, step: int) -> None:
        self.wall += step

    @rule()
    def now(self) -> None:
        before = self.clock.last
        spent = self.wall <= before.wall_ms and before.logical >= MAX_LOGICAL
        version = self.clock.now(self.wall)
        assert isinstance(version, Version)
        assert version.node_id == NODE
        assert 0 <= version.logical <= MAX_LOGICAL
        if self.greatest is not None:
            assert version > self.greatest, f"{version} is not after {self.greatest}"
        if self.last_issued is not None:
            assert version.wall_ms >= self.last_issued.wall_ms
        if self.wall > self.greatest_wall:
            # A wall clock ahead of everything seen restarts the counter.
            assert version.logical == 0
        if spent:
            # A spent counter moves on to the next millisecond, never further.
            assert version == Version(before.wall_ms + 1, 0, NODE), (before, version)
        # The physical part tracks the greatest wall time seen, including this one,
        # plus the milliseconds spent counters moved it on.
        self._see_wall(self.wall)
        if spent:
            self._see_wall(before.wall_ms + 1)
        assert version.wall_ms == self.greatest_wall
        assert version.wall_ms >= self.wall
        assert self.clock.last == version
        self._see(version)
        self.last_issued = version

    @rule(
        offset=st.integers(-3, 3) | st.integers(-(10**9), 10**9),
        logical=any_logicals,
        node=remote_nodes,
    )
    def observe(self, offset: int, logical: int, node: str) -> None:
        remote = Version(self.wall + offset, logical, node)
        self.clock.observe(remote, self.wall)
        self._see_wall(self.wall)
        self._see_wall(remote.wall_ms)
        self._see(remote)

    @precondition(lambda self: self.greatest is not None)
    @rule(step=st.integers(-(10**9), 0))
    def restart(self, step: int) -> None:
        """A new process: a fresh clock that observes the greatest stored version."""
        assert self.greatest is not None
        self.wall += step
        self.clock = HybridLogicalClock(NODE)
        self.clock.observe(self.greatest, self.wall)
        self.greatest_wall = max(0, self.greatest.wall_ms, self.wall)

    @invariant()
    def last_is_not_behind_what_was_issued(self) -> None:
        if self.last_issued is not None:
            assert self.clock.last >= self.last_issued


TestClockMachine = ClockMachine.TestCase
TestClockMachine.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, **MACHINE_SETTINGS
)


@given(
    stored=st.lists(wide_versions, min_size=1, max_size=10),
    wall_back=st.integers(0, 2**40),
    later=st.lists(st.integers(0, 2**40), min_size=1, max_size=5),
)
def test_restarted_clock_passes_the_greatest_stored_version(
    stored: list[Version], wall_back: int, later: list[int]
) -> None:
    greatest = max(stored)
    clock = HybridLogicalClock("node-1")
    # The wall clock went back: it now reads less than the stored version.
    wall = greatest.wall_ms - wall_back
    clock.observe(greatest, wall)
    issued = clock.now(wall)
    assert issued > greatest
    assert issued.wall_ms <= greatest.wall_ms + 1
    for step in later:
        nxt = clock.now(wall - step)
        assert nxt > issued
        assert 0 <= nxt.logical <= MAX_LOGICAL
        issued = nxt


def test_versions_are_wall_logical_node_tuples() -> None:
    clock = HybridLogicalClock("n1")
    version = clock.now(1_700_000_000_000)
    assert version == (1_700_000_000_000, 0, "n1")
    assert (version.wall_ms, version.logical, version.node_id) == tuple(version)
    assert str(version) == "1700000000000.0@n1"
    assert clock.now(1_700_000_000_000) == (1_700_000_000_000, 1, "n1")
    assert clock.now(1_699_999_999_000) == (1_700_000_000_000, 2, "n1")
    assert clock.now(1_700_000_000_001) == (1_700_000_000_001, 0, "n1")


def test_version_ties_are_broken_by_node_id() -> None:
    assert Version(5, 1, "a") < Version(5, 1, "b") < Version(5, 2, "a") < Version(6, 0, "a")


def test_observing_a_tied_version_from_a_greater_node_still_moves_past_it() -> None:
    clock = HybridLogicalClock("a")
    remote = Version(100, 7, "z")
    clock.observe(remote, 50)
    assert clock.now(50) > remote
    assert clock.now(100) > remote


def test_a_spent_counter_moves_the_wall_component_on_instead_of_failing() -> None:
    clock = HybridLogicalClock("a")
    clock.observe(Version(10, MAX_LOGICAL - 1, "b"), 10)
    assert clock.now(10) == Version(10, MAX_LOGICAL, "a")
    assert clock.now(10) == Version(11, 0, "a")
    assert clock.now(3) == Version(11, 1, "a")
    assert clock.now(11) == Version(11, 2, "a")
    assert clock.now(12) == Version(12, 0, "a")


def test_observing_a_maxed_out_remote_still_leaves_a_later_version() -> None:
    clock = HybridLogicalClock("a")
    remote = Version(10, MAX_LOGICAL, "b")
    clock.observe(remote, 9)
    assert clock.now(10) == Version(11, 0, "a") > remote
    assert clock.now(12) == Version(12, 0, "a")


def test_a_counter_beyond_the_wire_range_is_held_at_its_top() -> None:
    clock = HybridLogicalClock("a")
    remote = Version(10, 2**64, "b")
    clock.observe(remote, 5)
    assert clock.last == Version(10, MAX_LOGICAL, "a")
    # Not representable on the wire, yet the next version is later than it.
    assert clock.now(5) == Version(11, 0, "a") > remote


@settings(max_examples=300)
@given(
    steps=st.lists(
        st.tuples(
            st.booleans(),
            st.integers(0, 2**64),
            st.integers(0, 2**40) | st.sampled_from([MAX_LOGICAL - 1, MAX_LOGICAL, 2**33]),
            st.sampled_from(["a", "m", "z"]),
        ),
        max_size=60,
    )
)
def test_now_is_strictly_increasing_under_any_sequence_of_inputs(
    steps: list[tuple[bool, int, int, str]],
) -> None:
    clock = HybridLogicalClock("m")
    issued: list[Version] = []
    seen: list[Version] = []
    for is_observe, wall, logical, node in steps:
        if is_observe:
            remote = Version(wall, logical, node)
            clock.observe(remote, wall % 1000)
            seen.append(remote)
            continue
        version = clock.now(wall)
        assert 0 <= version.logical <= MAX_LOGICAL
        assert all(version > before for before in issued + seen)
        issued.append(version)


def test_empty_node_id_is_refused() -> None:
    with pytest.raises(ValueError, match="node_id"):
        HybridLogicalClock("")
