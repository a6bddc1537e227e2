"""a3redis.config.SETTINGS, the one table of settings: it covers Config exactly, its defaults
parse, and reading the configuration (or using the client) does not load the storage engine."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from a3redis.config import SETTINGS, SETTINGS_BY_ENV, Config, Setting, derived_defaults

ROOT = Path(__file__).resolve().parent.parent.parent

# The three settings that Config.from_env combines into `limits`.
LIMITS = {"max_key_bytes", "max_value_bytes", "max_clock_skew"}


def test_the_table_fills_every_config_field_once() -> None:
    attributes = [setting.attribute for setting in SETTINGS]
    assert len(attributes) == len(set(attributes))
    assert set(attributes) - LIMITS | {"limits"} == {f.name for f in dataclasses.fields(Config)}
    assert len(SETTINGS_BY_ENV) == len(SETTINGS)


def test_derived_defaults_are_exactly_those_the_table_leaves_open() -> None:
    open_defaults = {setting.env for setting in SETTINGS if setting.default is None}
    assert set(derived_defaults(4, "127.0.0.1")) == open_defaults
    assert all(SETTINGS_BY_ENV[env].shown_default for env in open_defaults)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.env)
def test_each_default_is_accepted_and_has_words(setting: Setting) -> None:
    derived = derived_defaults(4, "::1")
    setting.parse(derived[setting.env] if setting.default is None else setting.default)
    assert setting.parse.form and setting.doc
    assert "\n" not in setting.doc


@pytest.mark.parametrize("module", ["a3redis.client", "a3redis.config", "a3redis.tools.cli"])
def test_the_storage_engine_is_not_loaded_by(module: str) -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print(sorted(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split("'")
    assert "a3redis.storage.store" not in loaded
    assert module in loaded
