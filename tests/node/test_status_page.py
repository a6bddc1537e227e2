"""The status page, rendered by headless Chromium against a live node.

Chromium comes from system-packages.toml (./scripts/test installs it); where it is missing the
test is skipped with the fix, or fails under CI (tests/support/system_tools.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trio

from a3redis.client import Client
from tests.node.conftest import RunningNode
from tests.support.system_tools import system_command

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=4000",
]


@pytest.fixture
def chromium() -> str:
    # A plain fixture runs at setup, before pytest-trio starts the node: a missing browser
    # skips (or fails) the test without starting anything.
    return system_command("chromium")


def render(chromium: str, url: str, profile: Path, screenshot: Path) -> str:
    base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    subprocess.run(
        [*base, f"--screenshot={screenshot}", "--window-size=1200,900", url],
        capture_output=True,
        timeout=60,
        check=True,
    )
    dom = subprocess.run(
        [*base, "--dump-dom", url], capture_output=True, text=True, timeout=60, check=True
    )
    return dom.stdout


async def test_the_status_page_shows_members_ring_and_operations(
    chromium: str, client: Client, running_node: RunningNode, tmp_path: Path
) -> None:
    for i in range(10):
        await client.put(f"k{i}".encode(), b"v")
    url = f"http://127.0.0.1:{running_node.ports.http}/"
    screenshot = tmp_path / "status.png"
    dom = await trio.to_thread.run_sync(render, chromium, url, tmp_path / "profile", screenshot)
    assert '<span class="status alive">alive</span>' in dom
    assert "<td>node-1</td>" in dom
    assert "<td>normal</td>" in dom  # its role in the ring
    assert "100.0%" in dom  # one node holds the whole ring
    assert "<td>Put</td>" in dom
    assert 'id="error"></span>' in dom  # no fetch failed
    assert screenshot.stat().st_size > 10_000
