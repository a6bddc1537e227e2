"""What a running node's HTTP port tells a test: membership, metrics, object census.

Rules: read-only GETs on loopback, each with a timeout; a sample missing from
/metrics is an AssertionError naming it (unless the caller gives a default).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import NodeProcess

# (sample name, its labels sorted) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
# DEBUG_ENDPOINTS=1's /debug/objects (a3redis.api.heap): section -> name -> count
Census = dict[str, dict[str, int]]


def get_json(node: NodeProcess, path: str, timeout: float = 2) -> Any:
    with urllib.request.urlopen(f"http://{node.gossip}{path}", timeout=timeout) as response:
        return json.load(response)


def membership(node: NodeProcess) -> dict[str, Any]:
    body: dict[str, Any] = get_json(node, "/membership")
    return body


def statuses(node: NodeProcess) -> dict[str, str]:
    return {node_id: entry["status"] for node_id, entry in membership(node).items()}


def ready(node: NodeProcess) -> bool:
    """Whether the node coordinates requests (its /ready): it has found its ring."""
    try:
        body: dict[str, Any] = get_json(node, "/ready")
    except urllib.error.HTTPError as error:
        if error.code == 503:
            return False
        raise
    return bool(body.get("ready"))


def census(node: NodeProcess) -> Census:
    """The node's census of live objects (it must run with DEBUG_ENDPOINTS=1)."""
    body: Census = get_json(node, "/debug/objects", timeout=30)
    return body


def metrics_text(node: NodeProcess, timeout: float = 10) -> str:
    with urllib.request.urlopen(f"http://{node.gossip}/metrics", timeout=timeout) as response:
        text: str = response.read().decode()
        return text


def parse_samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def metric(node: NodeProcess, name: str, default: float | None = None, **labels: str) -> float:
    """The node's sample `name` with exactly `labels`; `default` if it has none."""
    key = (name, tuple(sorted(labels.items())))
    found = parse_samples(metrics_text(node)).get(key, default)
    if found is None:
        raise AssertionError(f"no sample {name} {labels or ''} in /metrics")
    return found


def counters(node: NodeProcess, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Each labelled sample of the node's counter `name` (without _total), by its set of labels."""
    return {
        frozenset(labels): value
        for (sample, labels), value in parse_samples(metrics_text(node)).items()
        if sample == f"{name}_total" and labels
    }


def rejected_counts(node: NodeProcess) -> dict[tuple[str, str], float]:
    """The node's a3redis_rejected_total counters, by (endpoint, reason)."""
    found: dict[tuple[str, str], float] = {}
    for labels, value in counters(node, "a3redis_rejected").items():
        named = dict(labels)
        found[(named["endpoint"], named["reason"])] = value
    return found
