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
  names, no surrounding whitespace, no connection-specific headers) plus, as
  custom metadata, only what a3redis itself makes: the cluster secret's
  signature fields (a3redis.cluster.peer_auth: lower-case names, values of
  a node id, digits or hex) and a client's `authorization` token. Neither
  pass would change a byte of those, so `trust_outbound_headers` turns both
  off for one connection. Headers that arrive are still validated in full:
  that is where bad input comes from.
- The one thing h2's normalisation did that matters for metadata is to send
  `authorization` (and `proxy-authorization`) as a never-indexed literal
  (RFC 7541 §6.2.3), so a credential never enters HPACK's compression
  tables. `trust_outbound_headers` keeps that with a per-connection hook on
  the encoder (NEVER_INDEXED), and gives the same treatment to the
  signature's per-call fields (timestamp, nonce, signature): a new value on
  every call, indexed they would only push purerpc's fixed headers out of
  the 4 KiB table. This is the one deliberate change of bytes: those three
  fields, which the stock code would index, go as never-indexed literals;
  everything else is sent exactly as before.
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


# Header fields always sent as never-indexed literals: credentials (as h2's normalisation
# does) and the cluster-secret signature's per-call fields (a3redis.cluster.peer_auth).
NEVER_INDEXED = frozenset(
    {b"authorization", b"proxy-authorization", b"x-a3-timestamp", b"x-a3-nonce", b"x-a3-signature"}
)


def trust_outbound_headers(grpc_socket: Any) -> None:
    """Turn off h2's normalisation and validation of what this purerpc socket sends,
    keeping credentials out of HPACK's tables (`never_index_credentials`)."""
    h2_connection = grpc_socket._grpc_connection.h2_connection
    config = h2_connection.config
    config.normalize_outbound_headers = False
    config.validate_outbound_headers = False
    never_index_credentials(h2_connection)


def never_index_credentials(h2_connection: Any) -> None:
    """Make this connection's HPACK encoder send NEVER_INDEXED fields as never-indexed
    literals (idempotent)."""
    encoder = h2_connection.encoder
    if getattr(encoder, "_a3_never_indexing", False):
        return
    add = encoder.add

    def add_never_indexing(
        to_add: tuple[bytes, bytes], sensitive: bool, huffman: bool = False
    ) -> bytes:
        encoded: bytes = add(to_add, sensitive or to_add[0] in NEVER_INDEXED, huffman)
        return encoded

    encoder.add = add_never_indexing
    encoder._a3_never_indexing = True
