"""Process-wide logging setup: one line per event, DEBUG_LOG for debug, LOG_FORMAT for the shape.

Rules: the node's modules log through the standard library (`logging.getLogger`)
and never choose a format; this module alone installs the one handler on the
root logger, so our lines and those of Hypercorn, purerpc and httpx come out
the same way. `LOG_FORMAT=text` (the default) is one human-readable line per
event; `LOG_FORMAT=json` renders every record, ours or a library's, through
structlog's ProcessorFormatter as one JSON object per line with `timestamp`
(ISO 8601, UTC), `level`, `logger`, `node_id` and `event`, plus `exception`
when there is a traceback (inside the JSON string, so still one line); an
exception nothing caught (a crash, in any thread) is logged the same way.
"""

from __future__ import annotations

import enum
import logging
import sys
import threading
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


def configure(node_id: str, debug: bool, log_format: LogFormat = LogFormat.TEXT) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format is LogFormat.JSON:
        handler.setFormatter(_json_formatter(node_id))
        # Python warnings, and a traceback Python itself prints for an uncaught
        # exception (a crash), would otherwise be plain lines among the JSON ones.
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread
    else:
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


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    logging.getLogger("a3redis.crash").critical(
        "uncaught %s: the process stops", kind.__name__, exc_info=(kind, error, traceback)
    )


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    thread = args.thread.name if args.thread is not None else "?"
    logging.getLogger("a3redis.crash").critical(
        "uncaught %s in thread %s",
        args.exc_type.__name__,
        thread,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _json_formatter(node_id: str) -> logging.Formatter:
    # Imported here: only a node asked for JSON pays structlog's import time
    # (the CLI imports this package's config on every command).
    import structlog

    def add_node_id(
        _logger: object, _method: str, event: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        event["node_id"] = node_id
        return event

    # Applied to every record: stdlib records (ours, Hypercorn's, purerpc's) arrive
    # here with `event` set to their formatted message.
    shared: list[structlog.typing.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        add_node_id,
    ]
    # Code that logs through structlog itself ends in the same handler and format.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _fields_first,
            structlog.processors.JSONRenderer(default=str),
        ],
    )


_FIRST = ("timestamp", "level", "node_id", "logger", "event")


def _fields_first(
    _logger: object, _method: str, event: MutableMapping[str, Any]
) -> Mapping[str, Any]:
    """The fixed fields in a fixed order, then whatever else the record carries."""
    return {
        **{name: event.pop(name) for name in _FIRST if name in event},
        **event,
    }
