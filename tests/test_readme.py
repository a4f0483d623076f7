"""The README is the operator's reference: it must name every variable, command and flag."""

from __future__ import annotations

import argparse
import re

from gofrtest import REPO

from gofr_common.backup.cli import build_parser
from gofr_common.backup.config import VARIABLES

README = (REPO / "README.md").read_text()


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```", 2)[1]
    assert "make demo" in first_block and "make test" in first_block


def test_every_variable_is_documented_with_its_default() -> None:
    for name, (default, _) in VARIABLES.items():
        row = next((line for line in README.splitlines() if f"`GOFR_{{P}}_BACKUP_{name}`" in line), None)
        assert row is not None, f"README lacks GOFR_{{P}}_BACKUP_{name}"
        assert f"`{default}`" in row, f"README's default for {name} is not {default}"


def test_every_command_and_flag_is_documented() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sp in sub.choices.items():
        assert re.search(rf"\| `{name}[ `]", README), f"README's command table lacks {name}"
        for action in sp._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt not in ("--help",):
                    assert opt in README, f"README does not mention {name} {opt}"


def test_every_relative_link_points_at_a_file_in_this_repository() -> None:
    # issue 13: the README linked to the design brief outside the repository, which no clone has
    for target in re.findall(r"\]\(([^)#\s]+)", README):
        if re.match(r"^[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path = (REPO / target).resolve()
        assert path.is_relative_to(REPO), f"README links outside the repository: {target}"
        assert path.exists(), f"README links to a file that does not exist: {target}"
