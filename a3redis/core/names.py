"""Names and addresses that cross the wire: node ids, cluster names, `host:port`.

Rules:
- One rule for a node id or a cluster name, wherever it comes from (NODE_ID,
  CLUSTER_NAME, gossip, a saved member table): 1-64 ASCII letters, digits,
  '.', '_' or '-', starting with a letter or digit. Such a name is safe as a
  file name (no separator, never "." or ".."), in a URL, a log line or a
  metric label, and encodes in every codec (no lone surrogates).
- A host is an ASCII host name or IPv4 address (letters, digits, '.', '_',
  '-') or an IPv6 literal (hex digits, ':' and '.', optionally a %zone), at
  most MAX_HOST_CHARS characters; an address is `HOST:PORT` or
  `[IPV6]:PORT` with a port from 1 to 65535. Anything that could change the
  meaning of a URL built from it (`/?#@`, spaces, brackets) is refused.
- The checks say yes or no, or raise a ValueError whose message describes the
  accepted form without echoing the input (which may be huge or unprintable).
"""

from __future__ import annotations

import re
from typing import TypeGuard

NODE_ID_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
MAX_NAME_CHARS = 64
# The longest DNS name (RFC 1035).
MAX_HOST_CHARS = 253
ADDRESS_RULE = (
    f"HOST:PORT or [IPV6]:PORT, a host of 1-{MAX_HOST_CHARS} ASCII letters, digits, "
    "'.', '_' or '-' (or an IPv6 literal) and a port from 1 to 65535"
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST_NAME = re.compile(r"[A-Za-z0-9._-]+")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(%[A-Za-z0-9._-]+)?")
_PORT = re.compile(r"[0-9]{1,5}")


def is_node_id(text: object) -> TypeGuard[str]:
    """Whether `text` is a valid node id (or cluster name)."""
    return isinstance(text, str) and _NAME.fullmatch(text) is not None


def is_host(text: object) -> TypeGuard[str]:
    """Whether `text` is a host name, an IPv4 address or a bare IPv6 literal."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_HOST_CHARS:
        return False
    return _HOST_NAME.fullmatch(text) is not None or _IPV6.fullmatch(text) is not None


def split_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPV6]:PORT` as (host, port); ValueError(ADDRESS_RULE) otherwise."""
    if len(text) > MAX_HOST_CHARS + 8:
        raise ValueError(ADDRESS_RULE)
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":") or ":" not in host:
            raise ValueError(ADDRESS_RULE)
        port_text = rest[1:]
    else:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            # An IPv6 host needs brackets, or the port would be ambiguous.
            raise ValueError(ADDRESS_RULE)
    if not is_host(host) or not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise ValueError(ADDRESS_RULE)
    return host, int(port_text)


def is_address(text: object) -> TypeGuard[str]:
    """Whether `text` is an address `split_address` accepts."""
    if not isinstance(text, str):
        return False
    try:
        split_address(text)
    except ValueError:
        return False
    return True
