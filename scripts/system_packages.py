"""The system packages the test suite uses: which are missing, and installing them.

Rules:
- system-packages.toml is the one list and this module its one reader: `./scripts/test`
  runs it (`python3 scripts/system_packages.py`) before the suite, and the tests' helper
  (tests/support/system_tools.py) asks it for commands and for the words of a skip.
- Standard library only: `./scripts/test` runs this with the machine's python3, before any
  virtualenv exists.
- It installs only where it can: as root with apt-get. `apt-get update` runs once, then one
  `apt-get install` of every missing package; if that fails, each package alone, so that one
  package the archive lacks does not keep the others out.
- Whatever is still missing is reported in one line per command: what in the suite needs it
  and the command that installs it. Those tests are then skipped with the same words, except
  under CI (A3REDIS_REQUIRE_FAULTS=1 or CI=true), where a missing command fails the run: this
  exits 1 before the suite starts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LIST = Path(__file__).resolve().parent.parent / "system-packages.toml"
# ip and nft live in sbin, which a non-root user's PATH often lacks: an installed command
# must not be reported missing (nor its tests skipped) for that.
SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_REQUIRED_KEYS = {"package", "used_by"}
_OPTIONAL_KEYS = {"other_names"}


@dataclass(frozen=True)
class SystemCommand:
    """One command the tests run, and the package that provides it."""

    name: str
    package: str
    used_by: str
    other_names: tuple[str, ...] = ()

    def find(self, search_path: str | None = None) -> str | None:
        """The program's path under the first of its names found, or None."""
        path = default_search_path() if search_path is None else search_path
        for candidate in (self.name, *self.other_names):
            found = shutil.which(candidate, path=path)
            if found is not None:
                return found
        return None

    def missing_reason(self, as_root: bool) -> str:
        """Why a test that needs this command cannot run, and the fix, in one line."""
        return (
            f"`{self.name}` is missing, needed by {self.used_by}; "
            f"install it with: {install_command([self.package], as_root)}"
        )


def default_search_path() -> str:
    entries = os.environ.get("PATH", os.defpath).split(os.pathsep)
    return os.pathsep.join([*entries, *(d for d in SBIN if d not in entries)])


def install_command(packages: Sequence[str], as_root: bool) -> str:
    return ("" if as_root else "sudo ") + "apt-get install " + " ".join(packages)


def is_root() -> bool:
    return os.geteuid() == 0


def required() -> bool:
    """Under CI a missing command fails the run instead of skipping its tests."""
    return (
        os.environ.get("A3REDIS_REQUIRE_FAULTS") == "1"
        or os.environ.get("CI", "").lower() == "true"
    )


def load(path: Path | None = None) -> dict[str, SystemCommand]:
    """The commands of the list (LIST), by name; a malformed entry stops naming file and entry."""
    path = LIST if path is None else path
    with path.open("rb") as file:
        table = tomllib.load(file)
    entries = table.get("commands")
    if not isinstance(entries, dict) or not entries or set(table) != {"commands"}:
        raise ValueError(f"{path}: expected only [commands.<name>] tables")
    commands = {}
    for name, entry in entries.items():
        keys = set(entry) if isinstance(entry, dict) else set()
        if not _REQUIRED_KEYS <= keys <= _REQUIRED_KEYS | _OPTIONAL_KEYS:
            raise ValueError(
                f"{path}: [commands.{name}] needs {sorted(_REQUIRED_KEYS)}, "
                f"may have {sorted(_OPTIONAL_KEYS)}; has {sorted(keys)}"
            )
        other_names = entry.get("other_names", [])
        if not isinstance(other_names, list) or not all(isinstance(n, str) for n in other_names):
            raise ValueError(f"{path}: [commands.{name}] other_names must be a list of names")
        commands[name] = SystemCommand(
            name, str(entry["package"]), str(entry["used_by"]), tuple(other_names)
        )
    return commands


@dataclass(frozen=True)
class Missing:
    """A command still missing after `ensure_installed`, and why it was not installed."""

    command: SystemCommand
    why_not_installed: str


def ensure_installed(
    commands: Mapping[str, SystemCommand],
    *,
    as_root: bool,
    apt_get: str | None,
    find: Callable[[SystemCommand], str | None],
    run: Callable[[Sequence[str]], int],
    say: Callable[[str], None],
) -> list[Missing]:
    """Install the packages of missing commands where possible; the commands still missing."""
    missing = [command for command in commands.values() if find(command) is None]
    if not missing:
        packages = sorted({command.package for command in commands.values()})
        say(f"system packages: all present ({', '.join(packages)})")
        return []
    if not as_root:
        return [Missing(command, "not root") for command in missing]
    if apt_get is None:
        return [Missing(command, "no apt-get on this machine") for command in missing]
    packages = list(dict.fromkeys(command.package for command in missing))
    say(f"system packages: installing {' '.join(packages)} (apt-get)")
    if run([apt_get, "update", "-qq"]) != 0:
        say("system packages: `apt-get update` failed; trying to install from the lists on disk")
    install = [apt_get, "install", "-y", "-qq", "--no-install-recommends"]
    if run([*install, *packages]) != 0 and len(packages) > 1:
        for package in packages:
            run([*install, package])
    return [
        Missing(command, "`apt-get install` failed") for command in missing if find(command) is None
    ]


def report_line(missing: Missing, as_root: bool, under_ci: bool) -> str:
    consequence = "under CI this fails the run" if under_ci else "those tests will be skipped"
    return (
        f"system packages: {missing.command.missing_reason(as_root)} "
        f"(not installed: {missing.why_not_installed}; {consequence})"
    )


def _run_apt(argv: Sequence[str]) -> int:
    print("+ " + " ".join(argv), flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(list(argv), env=env, check=False).returncode


def main() -> int:
    as_root = is_root()
    still_missing = ensure_installed(
        load(),
        as_root=as_root,
        apt_get=shutil.which("apt-get"),
        find=SystemCommand.find,
        run=_run_apt,
        say=lambda line: print(line, flush=True),
    )
    under_ci = required()
    for missing in still_missing:
        print(report_line(missing, as_root, under_ci), flush=True)
    return 1 if still_missing and under_ci else 0


if __name__ == "__main__":
    sys.exit(main())
