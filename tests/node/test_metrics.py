"""Prometheus metrics and the JSON summary move when traffic flows."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import trio

from a3redis.client import Client
from tests.node.conftest import RunningNode
from tests.support.node_http import parse_samples


def _get(url: str, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


async def test_metrics_parse_and_count_requests(client: Client, running_node: RunningNode) -> None:
    base = f"http://127.0.0.1:{running_node.ports.http}"
    _, before_text = await trio.to_thread.run_sync(_get, f"{base}/metrics")
    before = parse_samples(before_text)
    for i in range(25):
        await client.put(f"k{i}".encode(), b"v")
    for i in range(10):
        await client.get(f"k{i}".encode())
    content_type, text = await trio.to_thread.run_sync(_get, f"{base}/metrics")
    assert content_type.startswith("text/plain")
    after = parse_samples(text)
    put_ok = ("a3redis_requests_total", (("code", "OK"), ("rpc", "Put"), ("service", "KeyValue")))
    assert after[put_ok] - before.get(put_ok, 0) == 25
    assert after[("a3redis_request_seconds_count", (("rpc", "Get"),))] >= 10
    assert after[("a3redis_keys", ())] == 25
    assert after[("a3redis_fsyncs_total", ())] >= 1
    # One write at a time never overlaps a sync: the thread syncs, no child was started.
    assert after[("a3redis_fsync_in_child_process", ())] == 0
    assert after[("a3redis_fsync_process_lost_total", ())] == 0
    assert after[("a3redis_members", (("status", "alive"),))] == 1

    content_type, open_metrics = await trio.to_thread.run_sync(
        _get, f"{base}/metrics", "application/openmetrics-text; version=1.0.0"
    )
    assert content_type.startswith("application/openmetrics-text")
    assert open_metrics.rstrip().endswith("# EOF")


async def test_summary_is_non_zero_after_traffic(client: Client, running_node: RunningNode) -> None:
    for i in range(20):
        await client.put(f"s{i}".encode(), b"v")
        await client.get(f"s{i}".encode())
    _, body = await trio.to_thread.run_sync(
        _get, f"http://127.0.0.1:{running_node.ports.http}/api/metrics/summary"
    )
    summary: dict[str, Any] = json.loads(body)
    assert summary["keys"] == 20
    assert summary["operations"]["Put"]["count"] == 20
    assert summary["operations"]["Get"]["ops_per_s"] > 0
    assert summary["operations"]["Put"]["p99_ms"] > 0
    assert summary["members"]["alive"] == 1


async def test_memory_and_open_files_are_exposed_and_follow_the_process(
    running_node: RunningNode, tmp_path: Any
) -> None:
    base = f"http://127.0.0.1:{running_node.ports.http}"

    async def read() -> tuple[dict[Any, float], dict[str, Any]]:
        _, text = await trio.to_thread.run_sync(_get, f"{base}/metrics")
        _, body = await trio.to_thread.run_sync(_get, f"{base}/api/metrics/summary")
        return parse_samples(text), json.loads(body)["process"]

    metrics, process = await read()
    # The node runs in this test's process here, so /proc/self is the node's.
    assert metrics[("process_resident_memory_bytes", ())] > 10 * 1024 * 1024
    assert process["rss_bytes"] > 10 * 1024 * 1024
    files = [open(tmp_path / f"held-{i}", "w") for i in range(25)]  # noqa: SIM115
    try:
        held_metrics, held_process = await read()
    finally:
        for file in files:
            file.close()
    opened = held_metrics[("process_open_fds", ())] - metrics[("process_open_fds", ())]
    assert 25 <= opened <= 30
    assert 25 <= held_process["open_fds"] - process["open_fds"] <= 30
