"""Long Python work in a worker thread, in turns that leave the event loop its share.

Rules: a worker thread running Python code (encoding a snapshot, building a
Merkle index) holds the interpreter lock for a switch interval (5 ms) at a
time, and the event loop needs the lock back after every system call it
makes: each recv and send of a client's request could wait that long, and a
pass over fifty clients stalls for tens of milliseconds. Such work iterates
through `in_turns`, which sleeps PAUSE after every TURN items: the loop waits
for the lock at most one turn, and has it to itself during every pause.
Lowering the switch interval instead does not help (the loop still waits at
each of its many calls); the figures are in benchmarks/README.md,
"Worker threads that take turns".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

# Items per turn (a few hundred records: a fraction of a millisecond of work),
# and the pause after each.
TURN = 256
PAUSE = 0.0005


def in_turns(items: Iterable[T], turn: int = TURN, pause: float = PAUSE) -> Iterator[T]:
    """`items`, with a sleep of `pause` seconds after every `turn` of them."""
    for count, item in enumerate(items, 1):
        yield item
        if count % turn == 0:
            time.sleep(pause)
