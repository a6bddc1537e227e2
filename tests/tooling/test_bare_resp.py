"""benchmarks.bare_resp, the yardstick benchmarks.resp measures the node against: it must
answer what redis-benchmark sends, and acknowledge a SET only once it is in its log."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

from benchmarks.resp import start_bare


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The server as benchmarks.resp starts it (answering PING), and the file of its SETs."""
    with ExitStack() as stack:
        endpoint = start_bare(stack, tmp_path)
        yield endpoint.port, tmp_path / "bare" / "sets"


def test_it_answers_what_redis_benchmark_sends(bare: tuple[int, Path]) -> None:
    port, log = bare
    client = redis.Redis(port=port, protocol=2)
    assert client.ping() is True
    assert client.config_get("save") == {}
    assert client.get(b"missing") is None
    assert client.set(b"key", b"value") is True
    assert client.get(b"key") == b"value"
    # A SET is acknowledged after its commit: its bytes are in the log by then.
    assert b"key" in log.read_bytes() and b"value" in log.read_bytes()


def test_a_pipeline_of_sets_is_acknowledged_in_order(bare: tuple[int, Path]) -> None:
    port, log = bare
    client = redis.Redis(port=port, protocol=2)
    pipeline = client.pipeline(transaction=False)
    for index in range(100):
        pipeline.set(f"k{index}", f"v{index}")
    assert pipeline.execute() == [True] * 100
    assert client.get("k99") == b"v99"
    assert b"v99" in log.read_bytes()
