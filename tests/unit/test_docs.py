"""The README stays true to the code: every option is documented, and CI runs the README's test command."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from pipelines.options import AnalyticsOptions

ROOT = Path(__file__).resolve().parents[2]


def _option_names() -> set[str]:
    parser = argparse.ArgumentParser()
    AnalyticsOptions._add_argparse_args(parser)
    return {s for action in parser._actions for s in action.option_strings if s.startswith("--") and s != "--help"}


def test_every_option_is_in_the_readme_options_table():
    readme = (ROOT / "README.md").read_text()
    table_rows = {m.group(1) for m in re.finditer(r"^\| `(--[a-z_]+)` \|", readme, flags=re.MULTILINE)}
    assert _option_names() == table_rows


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in quick_start.strip().splitlines()]
    assert commands == ["make run", "make test"]
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == ["make test"]
