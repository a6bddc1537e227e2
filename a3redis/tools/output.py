"""How the command line prints a command's result: one JSON document with
`-o json` (for scripts), else the text as it is."""

from __future__ import annotations

import json
from typing import Any


def show(body: Any, json_out: bool) -> None:
    print(json.dumps(body) if json_out else body)
