"""Speed-ups for the pure-Python HTTP/2 stack under purerpc; not a byte on the wire changes.

Rules: this module owns every change a3redis makes to how h2 and hpack run,
and each one must leave the bytes sent and the answers given exactly as they
were (tests/node/test_h2_tuning.py compares both against the stock code). Two
changes, both found with py-spy on a node under load, where h2/hpack are a
large share of the CPU per request (benchmarks/README.md has the figures):

- hpack 3's `HeaderTable.search` scans the 61-entry static table, in Python,
  for every header it encodes (every header of every gRPC call, both sides). hpack 4 looks
  the static table up in a dict, but purerpc 0.8 needs h2 3.x, which needs
  hpack 3. `install()` gives hpack 3 the same dict lookup, process-wide, once;
  only a node's server calls it (a3redis.net.grpc_server), so a program that
  merely imports the client keeps hpack as shipped.
- h2 normalises and validates every header block it sends. The blocks sent
  on a3redis's connections are purerpc's own fixed gRPC headers (lower-case
  names, no surrounding whitespace, no connection-specific or credential
  headers) plus no custom metadata at all, so `trust_outbound_headers`
  turns both passes off for one connection. Headers that arrive are still
  validated in full: that is where bad input comes from. If a3redis ever
  sends credentials as metadata, normalisation must come back (it marks
  them never-indexed).
"""

from __future__ import annotations

from typing import Any

from hpack.table import HeaderTable

# Each (name, value) and each name of the static table at its first index, as
# the stock search returns them (it scans from the start and stops early).
_STATIC_PAIRS: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_PAIRS.setdefault((_name, _value), _index)
    _STATIC_NAMES.setdefault(_name, _index)
_DYNAMIC_START = HeaderTable.STATIC_TABLE_LENGTH + 1

_stock_search = HeaderTable.search


def indexed_search(
    table: HeaderTable, name: bytes, value: bytes
) -> tuple[int, bytes, bytes | None] | None:
    """What `HeaderTable.search` returns, with the static table looked up in a dict.

    A full match in the static table wins; then a full match in the dynamic
    table; then the first entry with the name, static before dynamic.
    """
    index = _STATIC_PAIRS.get((name, value))
    if index is not None:
        return index, name, value
    index = _STATIC_NAMES.get(name)
    partial = None if index is None else (index, name, None)
    for offset, (entry_name, entry_value) in enumerate(table.dynamic_entries):
        if entry_name == name:
            if entry_value == value:
                return offset + _DYNAMIC_START, entry_name, entry_value
            if partial is None:
                partial = (offset + _DYNAMIC_START, entry_name, None)
    return partial


def install() -> None:
    """Give hpack the indexed static-table search (idempotent, process-wide)."""
    HeaderTable.search = indexed_search


def stock_search(
    table: HeaderTable, name: bytes, value: bytes
) -> tuple[int, bytes, bytes | None] | None:
    """hpack's own search, kept for the tests that compare the two."""
    result: tuple[int, bytes, bytes | None] | None = _stock_search(table, name, value)
    return result


def trust_outbound_headers(grpc_socket: Any) -> None:
    """Turn off h2's normalisation and validation of what this purerpc socket sends."""
    config = grpc_socket._grpc_connection.h2_connection.config
    config.normalize_outbound_headers = False
    config.validate_outbound_headers = False
