"""The RESP codec alone: ns per request parsed and per reply encoded, in process.

Run: `python -m benchmarks.resp_codec` (about 30 seconds; `--budget` sets the
seconds per case and repeat). Each case runs `--repeats` times and the
fastest run is reported, the one the other processes of a shared machine
disturbed least. Parsers: `a3redis.core.resp.RequestReader`, and, when the
`hiredis` package is installed, `hiredis.Reader` as a reference: raw (what it
costs with no checks, which is not safe for a server: see benchmarks/README.md)
and with the exact check a server would need (re-encoding each request with
`hiredis.pack_command` and comparing it with the bytes read).
Not part of the published benchmark (`benchmarks.run`).
"""

from __future__ import annotations

import argparse
import importlib
import timeit
from collections.abc import Callable
from typing import Any

from a3redis.core.resp import RequestReader, encode, encode_all
from a3redis.core.resp_values import OK, Reply

# Optional, untyped, and not a dependency: only the reference figures need it.
hiredis: Any
try:
    hiredis = importlib.import_module("hiredis")
except ImportError:
    hiredis = None


def request(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


KEY = b"key:000000012345"
VALUE = b"x" * 100
REQUESTS = {
    "GET": request(b"GET", KEY),
    "SET 100 B": request(b"SET", KEY, VALUE),
    "MGET 10 keys": request(b"MGET", *[KEY] * 10),
}
REPLIES: dict[str, Reply] = {
    "bulk 100 B": VALUE,
    "null": None,
    "+OK": OK,
    "integer": 12345,
    "MGET 10 (8 values, 2 nulls)": [VALUE] * 8 + [None, None],
    "HELLO map (RESP3)": {b"server": b"redis", b"version": b"7.0.0", b"proto": 3, b"id": 7},
}


def per_item(run: Callable[[], object], items: int, budget: float, repeats: int) -> float:
    """Nanoseconds per item of the fastest of `repeats` runs of about `budget` seconds."""
    loops, _ = timeit.Timer(run).autorange()
    number = max(1, int(loops * budget / 0.2))
    return min(timeit.repeat(run, number=number, repeat=repeats)) / number / items * 1e9


def python_parser(data: bytes) -> Callable[[], object]:
    reader = RequestReader()

    def run() -> object:
        reader.feed(data)
        return reader.requests()

    return run


def hiredis_parser(data: bytes, *, checked: bool) -> Callable[[], object]:
    assert hiredis is not None
    reader = hiredis.Reader()
    pack = hiredis.pack_command

    def run() -> object:
        reader.feed(data)
        got = []
        while (item := reader.gets()) is not False:
            got.append(item)
        if checked and b"".join(map(pack, map(tuple, got))) != data:
            raise AssertionError("not canonical")
        return got

    return run


def encoding(reply: Reply, protocol: int) -> Callable[[], object]:
    return lambda: encode(reply, protocol)


def encoding_all(replies: list[Reply], protocol: int) -> Callable[[], object]:
    return lambda: encode_all(replies, protocol)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=0.1, help="seconds per run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    parsers: dict[str, Callable[[bytes], Callable[[], object]]] = {"a3redis": python_parser}
    if hiredis is not None:
        parsers["hiredis raw"] = lambda data: hiredis_parser(data, checked=False)
        parsers["hiredis checked"] = lambda data: hiredis_parser(data, checked=True)
    else:
        print("(hiredis is not installed: its reference figures are left out)")
    print("ns per request parsed (fastest run)")
    print(f"{'request':<14} {'pipeline':>8} " + " ".join(f"{name:>16}" for name in parsers))
    for name, one in REQUESTS.items():
        for depth in (1, 16):
            data = one * depth
            figures = [
                per_item(make(data), depth, args.budget, args.repeats) for make in parsers.values()
            ]
            print(f"{name:<14} {depth:>8} " + " ".join(f"{figure:>16.0f}" for figure in figures))
    print()
    print("ns per reply encoded (fastest run)")
    print(f"{'reply':<28} {'encode 2':>9} {'encode 3':>9} {'encode_all 16, 2':>17}")
    for name, reply in REPLIES.items():
        figures = [
            per_item(encoding(reply, 2), 1, args.budget, args.repeats),
            per_item(encoding(reply, 3), 1, args.budget, args.repeats),
            per_item(encoding_all([reply] * 16, 2), 16, args.budget, args.repeats),
        ]
        print(f"{name:<28} " + f"{figures[0]:>9.0f} {figures[1]:>9.0f} {figures[2]:>17.0f}")


if __name__ == "__main__":
    main()
