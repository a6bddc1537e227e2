"""Progress of long CLI operations, on stderr and only on a terminal.

Rules: progress never goes to stdout (which `-o json` keeps to one JSON
document) and is drawn only when stderr is a TTY, so scripts and logs see
nothing of it. It is one line, redrawn in place, and erased when the operation
ends, so what stays on the screen is the result alone.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TextIO

_ERASE_LINE = "\r\x1b[2K"


class Progress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = sys.stderr if stream is None else stream
        try:
            self.enabled = self._stream.isatty()
        except (AttributeError, ValueError):  # a closed or stream-like object
            self.enabled = False
        self._drawn = False

    def show(self, text: str) -> None:
        if self.enabled:
            self._stream.write(_ERASE_LINE + text)
            self._stream.flush()
            self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            self._stream.write(_ERASE_LINE)
            self._stream.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.clear()
