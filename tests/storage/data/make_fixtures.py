"""Write the fixtures of one file format in tests/storage/data/v<N> with the codec of the day.

Run once, with the a3redis release whose files the fixtures stand for, from
the repository root: `python tests/storage/data/make_fixtures.py` (with
PYTHONPATH naming that release's tree). It writes `v<its FORMAT_VERSION>`.
The files are committed; the storage tests check that today's code still
loads them. v1 came from the release before records carried an expiry, v2
from the one before frames named their batch (`b1372ac`). The salts are
fixed so that rerunning the script gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

from a3redis.core.hlc import Version
from a3redis.core.record import Record
from a3redis.storage import codec

HERE = Path(__file__).parent / f"v{codec.FORMAT_VERSION}"
WALL = 1_764_000_000_000  # 2025-11-24, any fixed time does

SNAPSHOT = [
    Record(b"alpha", b"one", Version(WALL, 0, "node-1")),
    Record(b"beta", None, Version(WALL + 1, 0, "node-2")),
    Record(b"gamma", b"\x00\xffbinary", Version(WALL + 2, 3, "node-3")),
]
LOG = [
    Record(b"alpha", b"two", Version(WALL + 10, 0, "node-1")),
    Record(b"delta", b"four", Version(WALL + 11, 0, "node-2")),
    codec.Purge(b"beta", None, Version(WALL + 1, 0, "node-2")),
    Record(b"gamma", None, Version(WALL + 12, 0, "node-1")),
]
# Formats from v2 on hold an expiry (far ahead: the record stays live).
if codec.FORMAT_VERSION >= 2:
    LOG.append(Record(b"eta", b"seven", Version(WALL + 13, 0, "node-3"), WALL + 10**12))
HINTS = [
    Record(b"epsilon", b"five", Version(WALL + 20, 0, "node-1")),
    Record(b"zeta", None, Version(WALL + 21, 1, "node-1")),
]


def main() -> None:
    (HERE / "data").mkdir(parents=True, exist_ok=True)
    (HERE / "hints").mkdir(parents=True, exist_ok=True)
    files = [
        (HERE / "data" / "snapshot-0000000002.snap", codec.FileKind.SNAPSHOT, 1, SNAPSHOT),
        (HERE / "data" / "log-0000000002.wal", codec.FileKind.LOG, 2, LOG),
        (HERE / "hints" / "node-2.hints", codec.FileKind.HINTS, 3, HINTS),
    ]
    for path, kind, salt, records in files:
        path.write_bytes(codec.encode_file(kind, salt, records))
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
