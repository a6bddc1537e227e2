"""README's table of environment variables, generated from a3redis.config.SETTINGS.

  python scripts/config_table.py           print the table (Markdown)
  python scripts/config_table.py --write   replace the table in README.md with it

Rules: the table is written between BEGIN and END in README.md and nowhere else;
tests/tooling/test_config_table.py fails when README's copy differs from what this
prints. A setting marked `internal` (for tests only) is left out.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the a3redis beside this script, not an installed copy

from a3redis.config import SETTINGS, Setting  # noqa: E402

README = ROOT / "README.md"
BEGIN = "<!-- settings: from a3redis/config.py, by `python scripts/config_table.py --write` -->"
END = "<!-- end of settings -->"
SEED_MARK = "†"


def markdown() -> str:
    """The table, with a note on the marked variables: the lines that go between the markers."""
    rows = [
        "| Variable | Default | Accepted | Meaning |",
        "|---|---|---|---|",
        *(_row(setting) for setting in SETTINGS if not setting.internal),
        "",
        f"{SEED_MARK} As in the older project: same name and meaning.",
    ]
    return "\n".join(rows) + "\n"


def _row(setting: Setting) -> str:
    name = f"`{setting.env}`" + (f" {SEED_MARK}" if setting.seed else "")
    if setting.shown_default:
        default = setting.shown_default
    elif setting.default:
        default = f"`{setting.default}`"
    else:
        default = "(empty)"
    cells = (name, default, setting.parse.form, setting.doc)
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def readme_table(text: str) -> str:
    """What README.md has between the markers; ValueError unless each appears once, in order."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"README.md must contain {BEGIN!r} and {END!r} once each")
    _, _, rest = text.partition(BEGIN + "\n")
    table, found, _ = rest.partition(END)
    if not found:
        raise ValueError(f"README.md: {END!r} must come after {BEGIN!r}")
    return table


def with_table(text: str) -> str:
    """README's text with the generated table between the markers."""
    old = readme_table(text)
    return text.replace(BEGIN + "\n" + old + END, BEGIN + "\n" + markdown() + END)


def main(argv: list[str]) -> int:
    if argv[1:] == ["--write"]:
        README.write_text(with_table(README.read_text()))
        return 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
