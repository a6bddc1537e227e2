"""The node's own CPU per Redis SET and GET, in process, without sockets.

`python -m benchmarks.handler_cost [--cycles 2000] [--runs 5] [--fsync no|always]
[--profile]` runs one node (`a3redis.node.run_node`, REPLICATION_FACTOR=1) in this
process, with its Redis listener left out: the benchmark takes the node's command
handler (`RedisCommands`) and its metrics observer and drives them as 50 connections
would, each sending one SET per turn (then one GET), parsed by the node's
`RequestReader` and answered with the node's reply encoder. Everything the node does
per request but the socket calls and the reactor's selector is in the figure: the
planner, the keyspace and coordinator, the store's group commit and table, the
callbacks, metrics. It prints µs per request of each run and their median.

What it is for: a figure without redis-benchmark's own noise (the client's CPU,
the kernel's loopback), so a change to the write or read path shows in a few
alternating runs, before the full benchmark (`benchmarks.resp`) confirms it. The
host's speed still moves it between runs minutes apart: compare trees in
alternating runs. `--profile` prints the top of a cProfile run (its overhead inflates
calls, not their order). Not part of the published benchmark (`benchmarks.run`), and
it measures no floor.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

import a3redis.node as node_module
from a3redis.api.resp_handler import RedisCommands
from a3redis.config import Config
from a3redis.core.redis_pipeline import protocol_runs
from a3redis.core.resp import RequestReader, RespLimits, encode_all
from a3redis.core.resp_values import Reply

CLIENTS = 50
KEYS = 100_000
VALUE = b"x" * 100


class _Captured:
    handler: RedisCommands | None = None
    observe: Callable[[Any, Sequence[list[bytes]], Sequence[Reply], float], None] | None = None


async def _listener_left_out(
    sock: Any,
    handler: RedisCommands,
    settings: Any,
    stop: trio.Event,
    observe: Any = None,
    *,
    stats: Any = None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Stands in for `serve_resp`: keeps the node's handler for the benchmark."""
    _Captured.handler = handler
    _Captured.observe = observe
    task_status.started(stats)
    await stop.wait()


class _Connections:
    """CLIENTS connections' sessions and parsers; one turn sends one command on each."""

    def __init__(self, handler: RedisCommands, observe: Any, rng: random.Random) -> None:
        self.handler = handler
        self.observe = observe
        self.rng = rng
        self.sessions = [handler.new_session(number, "bench") for number in range(CLIENTS)]
        self.readers = [RequestReader(RespLimits()) for _ in range(CLIENTS)]
        self.waiting = 0
        self.all_answered = trio.Event()

    def _answer(
        self, session: Any, run: list[list[bytes]], began: float
    ) -> Callable[[list[Reply] | None], None]:
        def answered(replies: list[Reply] | None) -> None:
            if replies is None:
                raise RuntimeError("the handler failed a request")
            self.observe(session, run, replies, time.perf_counter() - began)
            encode_all(replies, 2)
            self.waiting -= 1
            if not self.waiting:
                self.all_answered.set()

        return answered

    async def turn(self, verb: bytes) -> None:
        self.all_answered = trio.Event()
        self.waiting = CLIENTS
        for number in range(CLIENTS):
            key = b"key:%012d" % self.rng.randrange(KEYS)
            words = [verb, key, VALUE] if verb == b"SET" else [verb, key]
            request = b"*%d\r\n" % len(words) + b"".join(
                b"$%d\r\n%s\r\n" % (len(word), word) for word in words
            )
            reader = self.readers[number]
            reader.feed(request)
            for run in protocol_runs(reader.requests()):
                answer = self._answer(self.sessions[number], run, time.perf_counter())
                replies = self.handler.start(self.sessions[number], run, answer)
                if isinstance(replies, list):
                    answer(replies)
                elif replies is not None:
                    raise RuntimeError("a SET or GET needed a task: not what this measures")
        if self.waiting:
            await self.all_answered.wait()


async def _measure(args: argparse.Namespace) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="a3redis-handler-cost-") as data:
        config = Config.from_env(
            {
                "NODE_NUM": "1",
                "GRPC_PORT": "0",
                "GOSSIP_PORT": "0",
                "RESP_PORT": "0",
                "DATA_DIR": str(Path(data) / "node"),
                "REPLICATION_FACTOR": "1",
                "FSYNC": args.fsync,
            }
        )
        stop = trio.Event()
        node_module.serve_resp = _listener_left_out  # type: ignore[attr-defined,assignment]
        results: dict[str, list[float]] = {"SET": [], "GET": []}
        async with trio.open_nursery() as nursery:
            await nursery.start(node_module.run_node, config, stop)
            assert _Captured.handler is not None
            connections = _Connections(_Captured.handler, _Captured.observe, random.Random(1))
            for _ in range(200):  # warm up: the keys exist, the table has its shape
                await connections.turn(b"SET")
            profile = cProfile.Profile() if args.profile else None
            for _ in range(args.runs):
                for verb in ("SET", "GET"):
                    if profile is not None:
                        profile.enable()
                    began = time.process_time()
                    for _ in range(args.cycles):
                        await connections.turn(verb.encode())
                    spent = time.process_time() - began
                    if profile is not None:
                        profile.disable()
                    results[verb].append(spent / (args.cycles * CLIENTS) * 1e6)
            stop.set()
        if profile is not None:
            pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(40)
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.handler_cost", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--cycles", type=int, default=2000, help="turns per run (50 requests each)")
    parser.add_argument("--runs", type=int, default=5, help="runs of SET then GET")
    parser.add_argument("--fsync", choices=["no", "always"], default="no")
    parser.add_argument("--profile", action="store_true", help="profile the runs with cProfile")
    args = parser.parse_args(argv)
    results = trio.run(_measure, args)
    for verb, figures in results.items():
        runs = ", ".join(f"{figure:.2f}" for figure in figures)
        print(f"{verb}: {statistics.median(figures):.2f} µs of CPU per request (runs: {runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
