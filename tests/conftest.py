"""Fixtures; the helpers live in gofrtest.py (a unique name: tests/docker has its own conftest)."""

import os
from collections import Counter
from typing import Any

import pytest
from gofrtest import app, chdir_tmp, evidence, report_unpublished  # noqa: F401  (fixtures by name)
from hypothesis import settings

# `make test` runs a bounded fuzz; `make fuzz` (HYPOTHESIS_PROFILE=fuzz) runs many more examples
settings.register_profile("fuzz", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _skip_reason(rep: pytest.TestReport) -> str:
    longrepr = rep.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A reliability test that was skipped writes "not run (reason)" in its row of
    docs/RELIABILITY.md, one that failed before it published writes "error"; neither keeps the
    figure of an earlier run (gofrtest.report_unpublished)."""
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    if rep.skipped:
        report_unpublished(item, "not run", _skip_reason(rep))
    elif rep.failed and rep.when in ("setup", "call"):
        why = call.excinfo.exconly().strip().splitlines() if call.excinfo is not None else []
        report_unpublished(item, "error", why[0] if why else "failed")
    elif rep.passed and rep.when == "call":
        report_unpublished(item, "error", "the test passed without publishing its figures")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line that says how many guarantees this run did not exercise, and why (CI, with
    GOFR_REQUIRE_ALL=1, fails them instead)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: Counter[str] = Counter()
    for rep in skipped:
        reasons[_skip_reason(rep)] += 1
    why = "; ".join(f"{n} x {r}" for r, n in reasons.most_common())
    terminalreporter.write_line(
        f"gofr-backup: {len(skipped)} guarantee test(s) NOT exercised on this machine: {why}"
    )
