"""constraints.txt pins every dependency pyproject.toml declares, at a version it allows.

Every nox session installs with `-c constraints.txt`; a dependency added to
pyproject.toml but not locked, or a bound changed without `nox -s lock`,
fails here with its name instead of as a surprise in CI.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        texts.extend(extra)
    return [r for r in map(Requirement, texts) if canonicalize_name(r.name) != "a3redis"]


def test_every_declared_dependency_is_pinned_within_its_bounds() -> None:
    locked = pins()
    problems = []
    for requirement in declared():
        version = locked.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement.name} is not in constraints.txt (run `nox -s lock`)")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement.name}=={version} is outside {requirement.specifier}")
    assert problems == []


# Import names whose distribution is named otherwise.
DISTRIBUTION_OF = {
    "google": "protobuf",
    "quart_trio": "quart-trio",
    "prometheus_client": "prometheus-client",
}


def imported_top_level_names(package: Path) -> set[str]:
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_imported_third_party_package_is_declared() -> None:
    """What a3redis imports at run time is a dependency of its own, not of a dependency."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {canonicalize_name(Requirement(text).name) for text in project["dependencies"]}
    third_party = {
        name
        for name in imported_top_level_names(ROOT / "a3redis")
        if name not in sys.stdlib_module_names and name not in ("a3redis", "__future__")
    }
    missing = sorted(
        name
        for name in third_party
        if canonicalize_name(DISTRIBUTION_OF.get(name, name)) not in runtime
    )
    assert missing == []
