"""The system-package list, its installer (scripts/system_packages.py) and the tests' helper.

Installing is exercised against a fake machine (which commands exist, what apt-get does), so
these tests never install anything; the real installation is what `./scripts/test` does.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from scripts import system_packages
from scripts.system_packages import Missing, SystemCommand, ensure_installed, report_line
from tests.support import system_tools
from tests.support.faults import FAULT_TOOLS

TESTS = Path(__file__).resolve().parent.parent
ASKED_FOR = re.compile(r"""(?:system_command|missing_reason)\(\s*["']([^"']+)["']\s*\)""")


class FakeMachine:
    """Commands on PATH and an apt-get that installs every package but the unavailable ones."""

    def __init__(self, installed: set[str], unavailable: frozenset[str] = frozenset()) -> None:
        self.installed = installed
        self.unavailable = unavailable
        self.runs: list[list[str]] = []
        self.said: list[str] = []

    def find(self, command: SystemCommand) -> str | None:
        return f"/usr/bin/{command.name}" if command.package in self.installed else None

    def run(self, argv: Sequence[str]) -> int:
        self.runs.append(list(argv))
        if argv[1] != "install":
            return 0
        packages = [arg for arg in argv[2:] if not arg.startswith("-")]
        if any(package in self.unavailable for package in packages):
            return 100  # apt-get installs nothing when one package cannot be found
        self.installed.update(packages)
        return 0

    def ensure(self, as_root: bool = True, apt_get: str | None = "apt-get") -> list[Missing]:
        return ensure_installed(
            system_packages.load(),
            as_root=as_root,
            apt_get=apt_get,
            find=self.find,
            run=self.run,
            say=self.said.append,
        )


def missing_names(missing: list[Missing]) -> list[str]:
    return [m.command.name for m in missing]


@pytest.fixture
def not_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("A3REDIS_REQUIRE_FAULTS", raising=False)
    monkeypatch.delenv("CI", raising=False)


@pytest.fixture
def fake_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A list of two made-up commands, and a PATH of only an empty directory to add them to."""
    listed = tmp_path / "system-packages.toml"
    listed.write_text(
        '[commands.a3r-fake-tool]\npackage = "a3r-fake-pkg"\nused_by = "the fake tests"\n'
        '[commands.a3r-fake-browser]\npackage = "a3r-fake-browser"\n'
        'other_names = ["a3r-fake-browser-alt"]\nused_by = "the fake browser tests"\n'
    )
    monkeypatch.setattr(system_packages, "LIST", listed)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def put_executable(directory: Path, name: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# ----- the list ---------------------------------------------------------------------------------


def test_every_command_a_test_asks_for_is_listed_with_its_package() -> None:
    listed = system_packages.load()
    asked = {
        name
        for path in TESTS.rglob("*.py")
        if path.parent.name != "tooling"
        for name in ASKED_FOR.findall(path.read_text())
    }
    asked |= set(FAULT_TOOLS)
    assert {"chromium", "ip", "nft"} <= asked, asked
    assert asked <= set(listed), f"asked for but not in system-packages.toml: {asked - set(listed)}"
    for command in listed.values():
        assert command.package and command.used_by, command


def test_a_malformed_entry_is_refused_naming_the_file_and_the_entry(tmp_path: Path) -> None:
    broken = tmp_path / "list.toml"
    broken.write_text('[commands.chromium]\npakage = "chromium"\nused_by = "x"\n')
    with pytest.raises(ValueError, match=r"list\.toml: \[commands\.chromium\] needs"):
        system_packages.load(broken)


# ----- installing -------------------------------------------------------------------------------


def test_nothing_missing_runs_nothing() -> None:
    machine = FakeMachine(
        {"chromium", "iproute2", "nftables", "redis-tools", "redis-server", "nodejs", "npm"}
    )
    assert machine.ensure() == []
    assert machine.runs == []
    assert machine.said == [
        "system packages: all present "
        "(chromium, iproute2, nftables, nodejs, npm, redis-server, redis-tools)"
    ]


def test_as_root_with_apt_the_missing_packages_are_installed_after_one_update() -> None:
    machine = FakeMachine({"iproute2"})
    assert machine.ensure() == []
    options = ["-y", "-qq", "--no-install-recommends"]
    assert machine.runs == [
        ["apt-get", "update", "-qq"],
        [
            "apt-get",
            "install",
            *options,
            "chromium",
            "nftables",
            "redis-tools",
            "redis-server",
            "nodejs",
            "npm",
        ],
    ]
    assert machine.installed == {
        "chromium",
        "iproute2",
        "nftables",
        "redis-tools",
        "redis-server",
        "nodejs",
        "npm",
    }


def test_a_package_the_archive_lacks_does_not_keep_the_others_out() -> None:
    machine = FakeMachine(set(), unavailable=frozenset({"chromium"}))
    still = machine.ensure()
    assert missing_names(still) == ["chromium"]
    assert still[0].why_not_installed == "`apt-get install` failed"
    assert [run[1] for run in machine.runs].count("update") == 1
    assert machine.installed == {
        "iproute2",
        "nftables",
        "redis-tools",
        "redis-server",
        "nodejs",
        "npm",
    }


@pytest.mark.parametrize(
    ("as_root", "apt_get", "why"),
    [(False, "apt-get", "not root"), (True, None, "no apt-get on this machine")],
    ids=["not-root", "no-apt"],
)
def test_where_it_cannot_install_it_names_each_missing_command_and_its_fix(
    as_root: bool, apt_get: str | None, why: str
) -> None:
    machine = FakeMachine({"iproute2", "nftables", "nodejs", "npm"})
    still = machine.ensure(as_root=as_root, apt_get=apt_get)
    assert machine.runs == []
    assert missing_names(still) == ["chromium", "redis-cli", "redis-benchmark", "redis-server"]
    lines = [report_line(missing, as_root, under_ci=False) for missing in still]
    sudo = "" if as_root else "sudo "
    assert lines[0] == (
        "system packages: `chromium` is missing, needed by the status-page rendering test "
        "(tests/node/test_status_page.py); install it with: "
        f"{sudo}apt-get install chromium (not installed: {why}; those tests will be skipped)"
    )
    assert all(f"{sudo}apt-get install redis-tools" in line for line in lines[1:3])
    assert f"{sudo}apt-get install redis-server" in lines[3]
    assert "under CI this fails the run" in report_line(still[0], as_root, under_ci=True)


@pytest.mark.parametrize(
    ("env", "status"),
    [({}, 0), ({"CI": "true"}, 1), ({"A3REDIS_REQUIRE_FAULTS": "1"}, 1)],
    ids=["local", "ci", "require-faults"],
)
def test_the_script_fails_for_a_missing_command_only_under_ci(
    not_ci: None,
    fake_list: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    status: int,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(system_packages, "is_root", lambda: False)
    put_executable(fake_list, "a3r-fake-browser-alt")
    assert system_packages.main() == status
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines  # one line per missing command: only the fake tool
    assert "`a3r-fake-tool` is missing" in lines[0]
    assert "install it with: sudo apt-get install a3r-fake-pkg" in lines[0]


# ----- the tests' helper --------------------------------------------------------------------


def test_a_present_command_is_found_under_any_of_its_names(not_ci: None, fake_list: Path) -> None:
    tool = put_executable(fake_list, "a3r-fake-tool")
    alt = put_executable(fake_list, "a3r-fake-browser-alt")
    assert system_tools.system_command("a3r-fake-tool") == str(tool)
    assert system_tools.system_command("a3r-fake-browser") == str(alt)
    assert system_tools.missing_reason("a3r-fake-tool") is None


def test_a_missing_command_skips_naming_what_needs_it_and_the_fix(
    not_ci: None, fake_list: Path
) -> None:
    with pytest.raises(pytest.skip.Exception) as skipped:
        system_tools.system_command("a3r-fake-tool")
    reason = str(skipped.value)
    assert "`a3r-fake-tool` is missing, needed by the fake tests" in reason
    assert "apt-get install a3r-fake-pkg" in reason
    assert system_tools.missing_reason("a3r-fake-tool") == reason


@pytest.mark.parametrize("variable", ["CI", "A3REDIS_REQUIRE_FAULTS"])
def test_under_ci_a_missing_command_fails_the_test(
    not_ci: None, fake_list: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "true" if variable == "CI" else "1")
    with pytest.raises(
        pytest.fail.Exception, match=r"required under CI.*apt-get install a3r-fake-pkg"
    ):
        system_tools.system_command("a3r-fake-tool")


def test_a_command_missing_from_the_list_is_an_error_not_a_skip(not_ci: None) -> None:
    with pytest.raises(LookupError, match=r"not in system-packages\.toml"):
        system_tools.system_command("a3r-never-listed")


def test_the_search_path_adds_sbin_which_a_non_root_path_lacks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A non-root PATH often lacks /usr/sbin, where ip and nft are installed.
    monkeypatch.setenv("PATH", str(tmp_path))
    search = system_packages.default_search_path().split(os.pathsep)
    assert search[0] == str(tmp_path)
    assert {"/usr/sbin", "/sbin"} <= set(search)
