"""benchmarks.scaling's polls of a join: the CPU time it reads must bound the streaming
window it reports, and it must not read any inside that window (where its own reading
would take CPU from the cluster it measures)."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from benchmarks.scaling import Join, Usage

WAITING = st.sampled_from([None, "", "node-2 to acknowledge"])


def reading(usage: Usage) -> Callable[[], Usage]:
    """What `Join.record` calls to read the CPU time used so far: here, `usage`."""
    return lambda: usage


@st.composite
def join_states(draw: st.DrawFn) -> list[tuple[str, str | None]]:
    """(role, waiting_for) of node-4's successive polls: before it joins, while it joins
    (waiting for something or not), then joined and normal."""
    before = draw(st.lists(st.sampled_from(["starting", "waiting"]), max_size=3))
    joining = draw(st.lists(WAITING, min_size=1, max_size=30))
    after = draw(st.lists(st.sampled_from(["joined", "normal"]), min_size=1, max_size=3))
    return (
        [(role, draw(WAITING)) for role in before]
        + [("joining", waiting) for waiting in joining]
        + [(role, None) for role in after]
    )


@given(join_states())
def test_cpu_time_is_read_at_the_window_bounds_and_nowhere_inside(
    states: list[tuple[str, str | None]],
) -> None:
    join = Join(keys_held=1000, launched=0.0)
    for number, (role, waiting) in enumerate(states):
        state = {
            "role": role,
            "waiting_for": waiting,
            "keys_streamed": 10 * number,
            "bytes_streamed": 1000 * number,
        }
        # CPU seconds that grow by 1 and 2 a second, the machine's by 3.
        usage = Usage([float(number), 2.0 * number], 3.0 * number, {})
        join.record(float(number), state, reading(usage))
    start, end = join.stream_start, join.stream_end
    assert start.usage is not None and end.usage is not None
    inside = [poll for poll in join.polls if start.at < poll.at < end.at]
    assert all(poll.usage is None for poll in inside)
    assert join.stream_cores() == [1.0, 2.0]
    assert join.machine_cores() == 3.0
