"""Turning measurements into the printed tables, the ratios against the floors, and JSON.

Rules: nothing here measures; every figure comes from a CaseResult or a
RestartResult. A floor is judged only on the figure it names, and a floor
whose case did not run is reported as not judged, never as met.
"""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.load import CaseResult
from benchmarks.restart import FILL_BATCH_KEYS, RestartResult

# The echo server on a3redis's own gRPC stack, and on purerpc as shipped: the
# foundation issue's floors name "a bare purerpc echo server", so they are
# judged against the stock one; the same ratios against a3redis's stack (the
# key-value layer's own cost) are printed beside them with their own verdict.
ECHO = "echo"
ECHO_STOCK = "echo stock purerpc"
NODE_ALWAYS = "node FSYNC=always"
NODE_NO = "node FSYNC=no"
# The floors the project aims for.
GET_RATIO_FLOOR = 0.85  # node Get / echo Get at the top concurrency
PUT_RATIO_FLOOR = 0.75  # node Put (FSYNC=always) / echo Put at the top concurrency
HEALTH_RATIO_FLOOR = 0.9  # node Health/Check / echo Health/Check at the top concurrency
BATCH_PUT_FLOOR_KEYS_PER_S = 30_000.0
RESTART_FLOOR_S = 10.0
# The restart floor is stated for this many keys; smaller runs are not judged.
RESTART_FLOOR_KEYS = 1_000_000
# A case where other processes took more CPU than this (in cores) shared the machine.
CONTENDED_CORES = 0.25


@dataclass(frozen=True, slots=True)
class Measured:
    server: str
    result: CaseResult  # the median round by ops/s
    rounds: list[CaseResult]

    @property
    def spread(self) -> float:
        """(max - min) / median of ops/s over the rounds: how noisy this case was."""
        rates = [r.ops_per_s for r in self.rounds]
        median = self.result.ops_per_s
        return (max(rates) - min(rates)) / median if median else float("nan")


@dataclass(frozen=True, slots=True)
class Floor:
    name: str
    measured: float | None  # None: the case did not run
    floor: float
    higher_is_better: bool
    unit: str
    detail: str = ""  # how the figure was made, printed after it
    # False when every measurement behind the figure shared the CPUs with other work.
    reliable: bool = True

    @property
    def verdict(self) -> str:
        if self.measured is None or math.isnan(self.measured):
            return "not judged"
        met = self.measured >= self.floor if self.higher_is_better else self.measured <= self.floor
        verdict = "met" if met else "MISSED"
        return verdict if self.reliable else f"{verdict}, contended: unreliable"

    def describe(self) -> str:
        relation = ">=" if self.higher_is_better else "<="
        shown = "-" if self.measured is None else _number(self.measured)
        text = (
            f"{self.name}: {shown}{self.unit} (floor {relation} {_number(self.floor)}{self.unit})"
        )
        return f"{text}; {self.detail}" if self.detail else text


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def find(measured: list[Measured], server: str, method: str, concurrency: int) -> Measured | None:
    for item in measured:
        r = item.result
        if item.server == server and r.method == method and r.concurrency == concurrency:
            return item
    return None


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _ratio_floor(name: str, node: Measured | None, echo: Measured | None, floor: float) -> Floor:
    """node/echo ops/s: the median of the per-round ratios, each pair run back to back.

    Only rounds where neither side shared the CPUs with other processes count;
    if every round was contended, all count and the verdict says so. The
    detail adds the median ratio of server CPU per call (echo's over the
    node's): what the throughput ratio would be with each server alone on a
    core; less sensitive to contention than ops/s, though not immune (the
    two vCPUs may be hyperthreads of one core).
    """
    if node is None or echo is None or len(node.rounds) != len(echo.rounds):
        return Floor(name, None, floor, True, "x")
    pairs = [(n, e) for n, e in zip(node.rounds, echo.rounds, strict=True) if n.ops and e.ops]
    if not pairs:
        return Floor(name, None, floor, True, "x")

    def quiet(n: CaseResult, e: CaseResult) -> bool:
        return max(n.other_cores, e.other_cores) <= CONTENDED_CORES

    used = [(n, e) for n, e in pairs if quiet(n, e)] or pairs
    rates = [n.ops_per_s / e.ops_per_s for n, e in used]
    cpu = [e.server_cpu_us_per_op / n.server_cpu_us_per_op for n, e in used]
    rounds = ", ".join(
        f"{n.ops_per_s / e.ops_per_s:.2f}{'' if quiet(n, e) else '*'}" for n, e in pairs
    )
    detail = f"per round: {rounds} (* = contended); server CPU per call, echo/node: "
    detail += f"{_median(cpu):.2f}"
    reliable = any(quiet(n, e) for n, e in pairs)
    return Floor(name, _median(rates), floor, True, "x", detail, reliable)


def floors(
    measured: list[Measured],
    concurrency: int,
    batch_concurrency: int,
    restart: RestartResult | None,
) -> list[Floor]:
    def pair(method: str, echo: str = ECHO_STOCK) -> tuple[Measured | None, Measured | None]:
        return (
            find(measured, NODE_ALWAYS, method, concurrency),
            find(measured, echo, method, concurrency),
        )

    batch = find(measured, NODE_ALWAYS, "batch_put", batch_concurrency)
    restart_floor = Floor(
        f"restart with {RESTART_FLOOR_KEYS:,} keys, slowest of the runs",
        None,
        RESTART_FLOOR_S,
        False,
        " s",
    )
    if restart is not None and restart.keys >= RESTART_FLOOR_KEYS:
        restart_floor = Floor(
            restart_floor.name,
            restart.worst_ready_s,
            RESTART_FLOOR_S,
            False,
            " s",
            ", ".join(f"{run.label}: {run.ready_s:.1f} s" for run in restart.runs),
        )
    return [
        _ratio_floor(
            f"node Get / stock purerpc echo Get at c{concurrency}", *pair("get"), GET_RATIO_FLOOR
        ),
        _ratio_floor(
            f"node Put (FSYNC=always) / stock purerpc echo Put at c{concurrency}",
            *pair("put"),
            PUT_RATIO_FLOOR,
        ),
        _ratio_floor(
            f"stricter: node Get / echo on a3redis's gRPC stack at c{concurrency}",
            *pair("get", ECHO),
            GET_RATIO_FLOOR,
        ),
        _ratio_floor(
            f"stricter: node Put (FSYNC=always) / echo on a3redis's gRPC stack at c{concurrency}",
            *pair("put", ECHO),
            PUT_RATIO_FLOOR,
        ),
        _ratio_floor(
            f"node Health/Check / stock purerpc echo Health/Check at c{concurrency}",
            *pair("health"),
            HEALTH_RATIO_FLOOR,
        ),
        _ratio_floor(
            f"stricter: node Health/Check / echo on a3redis's gRPC stack at c{concurrency}",
            *pair("health", ECHO),
            HEALTH_RATIO_FLOOR,
        ),
        Floor(
            f"node BatchPut (100 keys, FSYNC=always) at c{batch_concurrency}",
            None if batch is None else batch.result.keys_per_s,
            BATCH_PUT_FLOOR_KEYS_PER_S,
            True,
            " keys/s",
            # Other work only slows a server down: a floor met under contention is met.
            reliable=batch is None
            or batch.result.other_cores <= CONTENDED_CORES
            or batch.result.keys_per_s >= BATCH_PUT_FLOOR_KEYS_PER_S,
        ),
        restart_floor,
    ]


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |"
        for row in [header, *rows]
    ]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def cases_table(measured: list[Measured]) -> str:
    header = [
        "server",
        "call",
        "conc",
        "ops/s",
        "spread",
        "keys/s",
        "p50 ms",
        "p99 ms",
        "server CPU µs/op",
        "server cores",
        "client cores",
        "other cores",
        "errors",
    ]
    rows = []
    for item in measured:
        r = item.result
        rows.append(
            [
                item.server,
                r.method,
                str(r.concurrency),
                _number(r.ops_per_s),
                f"{100 * item.spread:.0f}%" if len(item.rounds) > 1 else "",
                _number(r.keys_per_s) if r.method == "batch_put" else "",
                _number(r.p50_ms),
                _number(r.p99_ms),
                _number(r.server_cpu_us_per_op),
                _number(r.server_cores),
                _number(r.client_cores),
                _number(r.other_cores),
                str(r.errors + r.bad_responses),
            ]
        )
    return _table(header, rows)


def restart_table(restart: RestartResult) -> str:
    header = ["restart", "snapshot MB", "log MB", "stop s", "healthy s", "ready s", "RSS MB"]
    mb = 1024 * 1024
    rows = [
        [
            run.label,
            _number(run.snapshot_bytes / mb),
            _number(run.log_bytes / mb),
            _number(run.stop_s),
            _number(run.healthy_s),
            _number(run.ready_s),
            _number(run.rss_bytes / mb),
        ]
        for run in restart.runs
    ]
    memory = (
        f"keys: {restart.keys:,}; fill rate (BatchPut x{FILL_BATCH_KEYS}, FSYNC=no): "
        f"{_number(restart.fill_keys_per_s)} keys/s; empty node start: "
        f"{_number(restart.empty_start_s)} s\n"
        f"RSS empty node: {_number(restart.rss_empty_bytes / mb)} MB; "
        f"after fill: {_number(restart.rss_filled_bytes / mb)} MB "
        f"= {_number(restart.bytes_per_key_filled)} bytes/key; "
        + "; ".join(
            f"after '{run.label}': {_number(restart.bytes_per_key_recovered(run))} bytes/key"
            for run in restart.runs
        )
    )
    return _table(header, rows) + "\n" + memory


def contention_note(measured: list[Measured]) -> str:
    """A warning naming the cases that shared the CPUs with other work, or ''."""
    busy = [m for m in measured if m.result.other_cores > CONTENDED_CORES]
    if not busy:
        return ""
    worst = max(m.result.other_cores for m in busy)
    return (
        f"note: in {len(busy)} of {len(measured)} cases other processes used more than "
        f"{CONTENDED_CORES} cores (up to {worst:.2f}); absolute figures there are low, "
        f"ratios less affected (each pair ran back to back)"
    )


def floors_text(results: list[Floor]) -> str:
    return "\n".join(f"[{floor.verdict}] {floor.describe()}" for floor in results)


def to_json(
    settings: dict[str, Any],
    measured: list[Measured],
    restart: RestartResult | None,
    judged: list[Floor],
) -> str:
    cases = []
    for item in measured:
        r = item.result
        cases.append(
            {
                "server": item.server,
                **asdict(r),
                "server_cpu_us_per_op": r.server_cpu_us_per_op,
                "server_cores": r.server_cores,
                "client_cores": r.client_cores,
                "other_cores": r.other_cores,
                "spread": item.spread,
                "rounds": [asdict(round_result) for round_result in item.rounds],
            }
        )
    restart_json: dict[str, Any] | None = None
    if restart is not None:
        restart_json = {
            **asdict(restart),
            "bytes_per_key_filled": restart.bytes_per_key_filled,
            "bytes_per_key_recovered": {
                run.label: restart.bytes_per_key_recovered(run) for run in restart.runs
            },
        }
    document = {
        "machine": machine(),
        "settings": settings,
        "cases": cases,
        "restart": restart_json,
        "floors": [{**asdict(floor), "verdict": floor.verdict} for floor in judged],
    }
    # NaN is not JSON; an empty measurement is written as null.
    return json.dumps(_without_nan(document), indent=2)


def _without_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nan(item) for item in value]
    return value
