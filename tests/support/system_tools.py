"""System commands for tests (chromium, ip, nft, redis-cli ...): found, or skipped with the fix.

Rules:
- Every test that runs a system command gets it from `system_command(name)`, and the command
  must be listed in system-packages.toml (the list `./scripts/test` installs from): a test can
  never need something the test command does not install. An unlisted name is an error.
- A missing command (or capability, through `unavailable`) skips the test with what needs it
  and the command that installs it, except under CI (A3REDIS_REQUIRE_FAULTS=1 or CI=true),
  where the test fails with the same words instead.
"""

from __future__ import annotations

from typing import NoReturn

import pytest

from scripts import system_packages


def unavailable(reason: str) -> NoReturn:
    """Skip the test for `reason`, or fail it under CI, where nothing may be skipped."""
    if system_packages.required():
        pytest.fail(f"required under CI (A3REDIS_REQUIRE_FAULTS=1 or CI=true), but {reason}")
    pytest.skip(reason)


def missing_reason(name: str) -> str | None:
    """Why the listed command `name` cannot run here (with the fix), or None if it can."""
    command = _listed(name)
    if command.find() is None:
        return command.missing_reason(system_packages.is_root())
    return None


def system_command(name: str) -> str:
    """The path of the listed command `name`; skips the test (fails under CI) if it is missing."""
    command = _listed(name)
    found = command.find()
    if found is None:
        unavailable(command.missing_reason(system_packages.is_root()))
    return found


def _listed(name: str) -> system_packages.SystemCommand:
    commands = system_packages.load()
    if name not in commands:
        raise LookupError(
            f"`{name}` is not in {system_packages.LIST.name}: add it there (with its package), "
            "so that ./scripts/test installs it"
        )
    return commands[name]
