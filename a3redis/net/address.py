"""A node's network address, `HOST:PORT`: what PEERS lists and what clients dial.

Rules: pure (no socket, no I/O), so that the client, the CLI and the node's
configuration can all use it without loading the server or the storage engine.
Which hosts and ports are valid is decided in a3redis.core.names.
"""

from __future__ import annotations

from dataclasses import dataclass

from a3redis.core.names import split_address


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Address:
        """`HOST:PORT`, or `[IPV6]:PORT`; the port is from 1 to 65535 (a3redis.core.names)."""
        text = text.strip()
        try:
            host, port = split_address(text)
        except ValueError:
            raise ValueError(f"{text[:300]!r} is not HOST:PORT or [IPV6]:PORT") from None
        return cls(host, port)
