"""Fixtures; the helpers live in gofrtest.py (a unique name: tests/docker has its own conftest)."""

import os
from collections import Counter
from typing import Any

# pytest finds fixtures and hooks by name here
from gofrtest import app, chdir_tmp, evidence, pytest_runtest_makereport, skip_reason  # noqa: F401
from hypothesis import settings

# `make test` runs a bounded fuzz; `make fuzz` (HYPOTHESIS_PROFILE=fuzz) runs many more examples
settings.register_profile("fuzz", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line that says how many guarantees this run did not exercise, and why (CI, with
    GOFR_REQUIRE_ALL=1, fails them instead)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: Counter[str] = Counter()
    for rep in skipped:
        reasons[skip_reason(rep)] += 1
    why = "; ".join(f"{n} x {r}" for r, n in reasons.most_common())
    terminalreporter.write_line(
        f"gofr-backup: {len(skipped)} guarantee test(s) NOT exercised on this machine: {why}"
    )
