"""The machinery behind docs/RELIABILITY.md can show a failure: a failing trial, a skipped test and
a test that errors before it publishes each end up in the table as what they are, and
check_reliability.py refuses every one of them. A real pytest run in a subprocess, on tests written
for the purpose, writing a table of its own (GOFR_RELIABILITY_JSON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from check_reliability import problems, same_code
from gofrtest import REPO, SRC, code_version, render_markdown

TESTS = Path(__file__).resolve().parent

SAMPLE = """
import pytest
from gofrtest import Evidence, needs, reliability


@reliability("counted", "every trial is counted")
def test_counted(evidence: Evidence) -> None:
    for i in range(5):
        with evidence.trial() as problems:
            if i == 3:
                problems.append("trial 3 went wrong")
            if i == 4:
                raise ValueError("trial 4 crashed")
    evidence.publish("a note")


@reliability("skipped", "needs what this machine lacks")
def test_skipped(evidence: Evidence) -> None:
    needs(False, "needs a unicorn")


@reliability("broken", "dies before it publishes")
def test_broken(evidence: Evidence) -> None:
    with evidence.trial():
        pass
    raise RuntimeError("setup exploded")


@reliability("silent", "forgets to publish")
def test_silent(evidence: Evidence) -> None:
    pass


@reliability("short", "must hit its window")
def test_short(evidence: Evidence) -> None:
    with evidence.trial():
        pass
    evidence.require(False, "only 0 kills landed inside the window")
    evidence.publish()


@reliability("good {n}", "all is well")
@pytest.mark.parametrize("n", [1])
def test_good(evidence: Evidence, n: int) -> None:
    for _ in range(3):
        with evidence.trial():
            assert n == 1
    evidence.publish()
"""


def test_failures_skips_and_errors_reach_the_table(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from gofrtest import evidence, pytest_runtest_makereport, pytest_terminal_summary  # noqa\n\n\n"
        "def pytest_configure(config):\n"
        "    config.addinivalue_line('markers', 'reliability(scenario, guarantee): a row')\n"
    )
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    table = tmp_path / "out" / "reliability.json"
    table.parent.mkdir()
    # an old figure for the skipped test: it must not survive
    old = {"trials": 50, "failures": 0, "status": "measured", "guarantee": "g", "test": "t", "note": ""}
    table.write_text(json.dumps({"skipped": old}))
    r = _pytest(tmp_path, table)
    assert r.returncode == 1, r.stdout  # the failing tests fail the run
    # a local run says in one line what it did not exercise, and why
    assert "gofr-backup: 1 guarantee test(s) NOT exercised on this machine: 1 x needs a unicorn" in r.stdout
    rows = json.loads(table.read_text())
    assert set(rows) == {"counted", "skipped", "broken", "silent", "short", "good 1"}
    version = code_version()
    assert all(row["commit"] == version and row["date"] for row in rows.values())
    c = rows["counted"]
    assert (c["status"], c["trials"], c["failures"], c["note"]) == ("measured", 5, 2, "a note")
    assert rows["skipped"]["status"] == "not run" and rows["skipped"]["reason"] == "needs a unicorn"
    b = rows["broken"]
    assert (b["status"], b["trials"]) == ("error", 1) and "setup exploded" in b["reason"]
    assert rows["silent"]["status"] == "error" and "without publishing" in rows["silent"]["reason"]
    assert rows["short"]["status"] == "insufficient" and "0 kills" in rows["short"]["note"]
    g = rows["good 1"]
    assert (g["status"], g["trials"], g["failures"]) == ("measured", 3, 0)
    assert g["test"] == "test_sample.py::test_good[1]"
    md = (tmp_path / "out" / "RELIABILITY.md").read_text()
    assert md == render_markdown(rows)
    assert "| skipped | - | not run (needs a unicorn) |" in md
    assert "| counted | 5 | 2 |" in md
    # the checker refuses everything but the good row
    tests = {row["test"] for row in rows.values()}
    found = problems(rows, version, tests)
    flagged = {p.split(":")[0] for p in found}
    assert flagged == {"counted", "skipped", "broken", "silent", "short"}, found
    assert problems({"good 1": g}, version, {g["test"]}) == []
    # ... and a row measured on other code, a stale row, a test without a row
    assert problems({"good 1": g}, "0000000", {g["test"]})
    assert problems({"good 1": g}, version, set())
    assert problems({"good 1": g}, version, {g["test"], "test_sample.py::test_new"})


def _pytest(tmp_path: Path, table: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if k != "GOFR_REQUIRE_ALL"},
            "GOFR_RELIABILITY_JSON": str(table),
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(SRC)]),
            **env,
        },
        capture_output=True,
        text=True,
    )


def test_in_ci_a_guarantee_that_cannot_be_exercised_fails(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from gofrtest import evidence, pytest_runtest_makereport, pytest_terminal_summary  # noqa\n"
    )
    (tmp_path / "test_sample.py").write_text(
        "from gofrtest import Evidence, needs, reliability\n\n\n"
        "@reliability('rooted', 'needs root')\n"
        "def test_rooted(evidence: Evidence) -> None:\n"
        "    needs(False, 'needs root')\n"
    )
    table = tmp_path / "reliability.json"
    r = _pytest(tmp_path, table, GOFR_REQUIRE_ALL="1")
    assert r.returncode == 1 and "NOT exercised" not in r.stdout, r.stdout
    row = json.loads(table.read_text())["rooted"]
    assert row["status"] == "error" and "not exercised: needs root" in row["reason"]


def test_code_version_names_the_commit() -> None:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    assert code_version() in (head, head + "-dirty")


def test_a_commit_that_only_adds_the_table_keeps_its_rows_current(tmp_path: Path) -> None:
    """A real repository: code at one commit, the table added by the next, code changed by a third."""
    import check_reliability

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("config", "user.email", "t@example.invalid")
    git("config", "user.name", "t")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-qm", "code")
    measured = git("rev-parse", "--short", "HEAD").strip()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "reliability.json").write_text("{}\n")
    (tmp_path / "docs" / "RELIABILITY.md").write_text("# Reliability\n")
    git("add", ".")
    git("commit", "-qm", "the table")
    table_added = git("rev-parse", "--short", "HEAD").strip()
    (tmp_path / "code.py").write_text("x = 2\n")
    git("commit", "-qam", "more code")
    changed = git("rev-parse", "--short", "HEAD").strip()
    repo = check_reliability.REPO
    check_reliability.REPO = tmp_path  # (the module-level repository the git commands run in)
    try:
        assert same_code(measured, measured)
        assert same_code(measured, table_added)
        assert not same_code(measured, changed)
        assert not same_code(measured + "-dirty", table_added)
    finally:
        check_reliability.REPO = repo
