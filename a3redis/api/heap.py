"""A census of the live objects of a node, for finding and guarding against leaks.

Rules: read-only, and only served when DEBUG_ENDPOINTS=1, since it walks
every object on the heap (a fraction of a second on a small node, longer
on a big one; the event loop waits meanwhile). It counts, per type of the
packages that make up a node's request path, the live instances, and for
each such instance the entries of every container it holds directly (a
dict, list, set or deque attribute, such as a connection's stream table):
a structure kept per request shows up as a count that grows with the
number of requests, whether it holds objects or plain numbers.
"""

from __future__ import annotations

import gc
from collections import Counter, deque
from collections.abc import Iterable, Sized

# The packages a request passes through: ours, the gRPC and HTTP/2 stack,
# the HTTP app, and the event loop.
WATCHED_PACKAGES = (
    "a3redis",
    "purerpc",
    "h2",
    "hpack",
    "hyperframe",
    "trio",
    "anyio",
    "quart",
    "quart_trio",
    "hypercorn",
    "httpx",
    "httpcore",
    "builtins",
)
_CONTAINERS = (dict, list, set, frozenset, tuple, deque)


def _watched(module: str) -> bool:
    return module.split(".", 1)[0] in WATCHED_PACKAGES


def _attributes(obj: object) -> Iterable[tuple[str, object]]:
    namespace = getattr(obj, "__dict__", None)
    if isinstance(namespace, dict):
        yield from namespace.items()
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if isinstance(name, str) and name != "__dict__":
                value = getattr(obj, name, None)
                if value is not None:
                    yield name, value


def census() -> dict[str, dict[str, int]]:
    """Live instances per watched type, and container entries per `Type.attribute`."""
    _prune_trio_deadlines()
    gc.collect()
    instances: Counter[str] = Counter()
    entries: Counter[str] = Counter()
    objects = gc.get_objects()
    for obj in objects:
        kind = type(obj)
        if not _watched(kind.__module__):
            continue
        name = f"{kind.__module__}.{kind.__qualname__}"
        instances[name] += 1
        for attribute, value in _attributes(obj):
            if isinstance(value, _CONTAINERS):
                assert isinstance(value, Sized)
                entries[f"{name}.{attribute}"] += len(value)
    return {
        "instances": dict(instances),
        "entries": dict(entries),
        "totals": {"gc_objects": len(objects)},
    }


def _prune_trio_deadlines() -> None:
    """Drop the stale entries of trio's deadline heap, as trio itself does from time to time.

    trio keeps the cancel scopes of expired or finished deadlines in its heap
    until they outnumber the live ones by 1,000 (bounded, but a saw-tooth of
    up to ~1,000 objects in any census). Pruning first makes the census count
    what is live. This reaches into trio's run loop (no public API does it);
    if trio's internals change, the census simply counts the stale entries.
    """
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT

        GLOBAL_RUN_CONTEXT.runner.deadlines._prune()
    except (ImportError, AttributeError, AssertionError):
        pass
