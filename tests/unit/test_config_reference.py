"""docs/configuration.md is generated from the settings: a setting added, removed or re-described
without `make docs` fails here, and so does a setting with no description."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import reference
from config.settings import ENV_PREFIX, Settings


def test_the_page_is_current() -> None:
    assert reference.PAGE.read_text() == reference.render(), "docs/configuration.md is out of date: run `make docs`"


def test_every_setting_is_on_the_page_with_its_description() -> None:
    page = reference.PAGE.read_text()
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
        row = next((line for line in page.splitlines() if line.startswith(f"| `{ENV_PREFIX}{name.upper()}` |")), None)
        assert row is not None, f"{ENV_PREFIX}{name.upper()} is missing from docs/configuration.md"
        assert field.description.replace("|", "\\|") in row, name
    # The two the issue named as missing from the hand-kept table.
    assert "`BOXTASKS_BACKUP_DIR`" in page and "`BOXTASKS_RELEASE_PUBLIC_KEY`" in page


def test_check_mode_refuses_a_stale_page_and_writes_nothing(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    stale = reference.render().replace("| `BOXTASKS_BACKUP_DIR` |", "| `BOXTASKS_BACKUP_DIRECTORY` |")
    page.write_text(stale)
    assert reference.main(["--check", str(page)]) == 1
    assert page.read_text() == stale
    assert reference.main([str(page)]) == 0
    assert reference.main(["--check", str(page)]) == 0
    assert page.read_text() == reference.render()


class _Undocumented(Settings):
    undocumented_knob: int = 1


def test_a_setting_without_a_description_is_refused() -> None:
    with pytest.raises(ValueError, match="undocumented_knob"):
        reference.render(_Undocumented)


def test_secrets_defaults_are_never_shown() -> None:
    page = reference.PAGE.read_text()
    row = next(line for line in page.splitlines() if line.startswith("| `BOXTASKS_FLOWER_PASSWORD` |"))
    assert row.split(" | ")[1] == "empty"
    assert "SecretStr" not in page and "**" not in page
