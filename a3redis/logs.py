"""Process-wide logging setup: one line per event, DEBUG_LOG for debug."""

from __future__ import annotations

import logging
import sys


def configure(node_id: str, debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {node_id} [%(name)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        # purerpc logs every dropped client connection as a warning with a traceback.
        logging.getLogger("purerpc").setLevel(logging.ERROR)
        logging.getLogger("hpack").setLevel(logging.WARNING)
        # httpx logs every gossip request at INFO: one line per second per peer.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpcore").setLevel(logging.WARNING)
