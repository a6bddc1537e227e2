"""Ports for test nodes: pytest processes that run at once hand out disjoint ports."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.processes import LOWEST_PORT, port_range


def test_without_a_slice_the_whole_range_is_used() -> None:
    assert port_range(None, 32767) == (LOWEST_PORT, 32767)
    assert port_range("", 32767) == (LOWEST_PORT, 32767)


@given(st.integers(1, 8), st.integers(LOWEST_PORT + 1000, 65535))
def test_slices_are_disjoint_nonempty_and_inside_the_range(count: int, high: int) -> None:
    slices = [port_range(f"{index}/{count}", high) for index in range(count)]
    for low, top in slices:
        assert LOWEST_PORT <= low <= top <= high
    for (_, top), (low, _) in pairwise(slices):
        assert top < low


@pytest.mark.parametrize("spec", ["3/3", "-1/2", "1", "a/b", "1/0", "0/2/3"])
def test_a_bad_slice_is_refused_with_its_variable(spec: str) -> None:
    with pytest.raises(ValueError, match="A3REDIS_TEST_PORT_SLICE"):
        port_range(spec, 32767)
