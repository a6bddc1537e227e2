"""The one readiness decision (HTTP /ready, gRPC Health) and the watcher slots."""

from __future__ import annotations

import itertools

import pytest

from a3redis.core.health import (
    KEY_VALUE,
    OVERALL,
    NodeCondition,
    ServingStatus,
    WatchSlots,
    serves_requests,
    status_of,
)

HEALTHY = NodeCondition(joining=False, draining=False, store_failed=False)


def test_a_joined_node_with_an_open_store_serves() -> None:
    assert serves_requests(HEALTHY)
    assert status_of(OVERALL, HEALTHY) is ServingStatus.SERVING
    assert status_of(KEY_VALUE, HEALTHY) is ServingStatus.SERVING


@pytest.mark.parametrize("flags", [f for f in itertools.product([False, True], repeat=3) if any(f)])
def test_joining_draining_or_a_failed_store_each_stop_serving(flags: tuple[bool, ...]) -> None:
    condition = NodeCondition(*flags)
    assert not serves_requests(condition)
    assert status_of(OVERALL, condition) is ServingStatus.NOT_SERVING
    assert status_of(KEY_VALUE, condition) is ServingStatus.NOT_SERVING


@pytest.mark.parametrize("service", ["a3redis.v1.Replica", "grpc.health.v1.Health", "x"])
def test_other_services_are_unknown(service: str) -> None:
    assert status_of(service, HEALTHY) is None


def test_watch_slots_refuse_beyond_the_limit_and_come_back() -> None:
    slots = WatchSlots(limit=2)
    assert slots.take() and slots.take()
    assert not slots.take()
    slots.give_back()
    assert slots.take()
    slots.give_back()
    slots.give_back()
    with pytest.raises(ValueError):
        slots.give_back()
    with pytest.raises(ValueError):
        WatchSlots(limit=0)
