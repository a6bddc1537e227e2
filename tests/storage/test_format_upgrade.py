"""Files of format v1 (written before records carried an expiry) still load.

The fixtures in tests/storage/data/v1 were made by the release that wrote
format v1 (tests/storage/data/make_v1_fixtures.py says how); a node of today
opens such a DATA_DIR and hints directory as they are and reads every record
back with no expiry, and later writes go on in the current format.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from a3redis.cluster.hinted_handoff import HintStore
from a3redis.core.hlc import Version
from a3redis.storage.store import Store

V1 = Path(__file__).parent / "data" / "v1"
WALL = 1_764_000_000_000


async def test_a_v1_data_dir_loads_with_every_record_and_no_expiry(tmp_path: Path) -> None:
    shutil.copytree(V1 / "data", tmp_path / "data")
    async with Store.open(tmp_path / "data") as store:
        alpha = store.get(b"alpha")
        assert alpha is not None and alpha.value == b"two"
        assert alpha.version == Version(WALL + 10, 0, "node-1")
        assert store.get(b"beta") is None  # purged in the log
        gamma = store.get(b"gamma")
        assert gamma is not None and gamma.value is None
        delta = store.get(b"delta")
        assert delta is not None and delta.value == b"four"
        assert [r.key for r in store.scan(include_tombstones=True)] == [
            b"alpha",
            b"delta",
            b"gamma",
        ]
        assert all(getattr(r, "expires_at_ms", 0) == 0 for r in store.scan(include_tombstones=True))
        await store.apply(alpha._replace(value=b"three", version=Version(WALL + 30, 0, "node-1")))
    async with Store.open(tmp_path / "data") as store:
        again = store.get(b"alpha")
        assert again is not None and again.value == b"three"
        assert store.get(b"delta") == delta


def test_a_v1_hints_file_loads(tmp_path: Path) -> None:
    shutil.copytree(V1 / "hints", tmp_path / "hints")
    hints = HintStore(tmp_path / "hints", window_s=3600, wall_ms=lambda: WALL + 100)
    hints.load()
    held = hints.held("node-2")
    assert sorted(held) == [b"epsilon", b"zeta"]
    assert held[b"epsilon"].value == b"five" and held[b"zeta"].value is None
    assert all(getattr(r, "expires_at_ms", 0) == 0 for r in held.values())
