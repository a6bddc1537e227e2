"""`a3redis cluster up`: a local cluster of node processes for trying a3redis out.

Rules: the launcher supervises its children: it starts N `python -m
a3redis.node` processes on this host at the standard ports (gRPC 50050+N,
HTTP 8000+N, Redis protocol 6379+N), waits until every node sees every other
as alive and serves, prints the endpoints (and redis-cli lines), and on
Ctrl-C or SIGTERM stops them all with SIGTERM (then kill after a grace
period), exiting 0 with no orphan left. A child that dies on
its own stops the whole cluster with its log's tail and exit code 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO


@dataclass
class Child:
    number: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{50050 + self.number}"

    @property
    def http(self) -> str:
        return f"127.0.0.1:{8000 + self.number}"

    @property
    def resp_port(self) -> int:
        return 6379 + self.number

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    # Once: until _stop_all takes over the signals, another one must not raise
    # again in the middle of the clean-up.
    for each in (signal.SIGINT, signal.SIGTERM):
        signal.signal(each, signal.SIG_IGN)
    raise _Stop


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def cluster_up(nodes: int, replication_factor: int, base_dir: Path, out: TextIO) -> int:
    base_dir.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for number in range(1, nodes + 1):
            env = dict(
                os.environ,
                NODE_NUM=str(number),
                TOTAL_NODES=str(nodes),
                REPLICATION_FACTOR=str(replication_factor),
                DATA_DIR=str(base_dir / f"node{number}"),
            )
            log_path = base_dir / f"node{number}.log"
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "a3redis.node"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches the launcher, which stops them
                )
            children.append(Child(number, process, log_path))
        print(f"starting {nodes} nodes (replication factor {replication_factor}) ...", file=out)
        if not _wait_until_formed(children, nodes):
            return 1
        _print_summary(children, base_dir, out)
        while True:
            for child in children:
                if child.process.poll() is not None:
                    print(
                        f"node-{child.number} exited with {child.process.returncode}:\n"
                        f"{child.tail()}",
                        file=out,
                    )
                    return 1
            time.sleep(0.2)
    except _Stop:
        print("\nstopping ... (Ctrl-C again: the nodes stop at once)", file=out, flush=True)
        return 0 if _stop_all(children) else 1
    finally:
        _stop_all(children)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _wait_until_formed(children: list[Child], nodes: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            if child.process.poll() is not None:
                print(f"node-{child.number} failed to start:\n{child.tail()}", file=sys.stderr)
                return False
        views = [_get_json(f"http://{child.http}/membership") for child in children]
        healths = [_get_json(f"http://{child.http}/health") for child in children]
        if all(
            isinstance(view, dict)
            and sum(1 for entry in view.values() if entry.get("status") == "alive") == nodes
            for view in views
        ) and all(isinstance(health, dict) and health.get("ready") for health in healths):
            return True
        time.sleep(0.2)
    print(f"the nodes did not all see each other within {timeout:.0f}s", file=sys.stderr)
    return False


def _print_summary(children: list[Child], base_dir: Path, out: TextIO) -> None:
    print("\nNODE    GRPC               HTTP              REDIS  LOG", file=out)
    for child in children:
        print(
            f"node-{child.number:<3} {child.grpc:<18} {child.http:<17} {child.resp_port:<6} "
            f"{child.log_path}",
            file=out,
        )
    endpoints = ",".join(child.grpc for child in children)
    first, last = children[0].resp_port, children[-1].resp_port
    print(
        f"\nall {len(children)} nodes are alive. Try:\n"
        f"  a3redis put hello world --endpoint {endpoints}\n"
        f"  a3redis get hello --endpoint {endpoints}\n"
        f"  redis-cli -p {first} SET greeting hello\n"
        f"  redis-cli -p {last} GET greeting\n"
        f"  a3redis cluster status\n"
        f"  curl http://{children[0].http}/membership\n"
        f"data in {base_dir}; Ctrl-C stops the cluster.",
        file=out,
        flush=True,
    )


def _stop_all(children: list[Child], grace: float = 10.0) -> bool:
    """SIGTERM every running child, wait, kill stragglers; True if all exited cleanly.

    A Ctrl-C (or SIGTERM) that comes meanwhile is passed on, not raised: a
    node's second signal makes it exit at once, and the launcher must not
    leave with a traceback and its nodes still running.
    """
    signals: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda got, _frame: signals.append(got))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        _terminate_running(children)
        passed_on = 0
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(c.process.poll() is None for c in children):
            if len(signals) > passed_on:
                passed_on = len(signals)
                _terminate_running(children)
            time.sleep(0.05)
        clean = True
        for child in children:
            if child.process.poll() is None:
                child.process.kill()
                child.process.wait()
                clean = False
            else:
                clean = clean and child.process.returncode == 0
        return clean
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _terminate_running(children: list[Child]) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
