"""Check docs/reliability.json after a run of the suite (`.ci/run` runs this after `make test`).

Fails (exit 1, one line per problem) when a row
- shows a failure, was not run, stopped with an error, or had too few trials hit its window;
- was measured on other code than the work tree's: its commit is neither ``code_version()`` nor a
  commit that differs from HEAD only in the generated files (the commit that adds the table);
- belongs to no test marked ``reliability`` any more, or such a test has no row.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

from gofrtest import GENERATED, RELIABILITY_JSON, REPO, code_version


def same_code(measured: str, version: str) -> bool:
    """Was ``measured`` (a row's commit) taken on the code that ``version`` (the work tree's) is?
    Yes if they are equal, or if both are clean commits whose trees differ only in the generated
    reliability files (so the commit that records the table does not make it stale)."""
    if measured == version:
        return True
    if measured.endswith("-dirty") or version.endswith("-dirty") or "unknown" in (measured, version):
        return False
    r = subprocess.run(
        ["git", "diff", "--quiet", measured, version, "--", ".", *[f":(exclude){g}" for g in GENERATED]],
        cwd=REPO,
        capture_output=True,
    )
    return r.returncode == 0


def marked_tests() -> set[str]:
    """Node ids of the tests that write a row (pytest collects them; nothing runs)."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-m",
            "reliability",
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    ids = {line.strip() for line in r.stdout.splitlines() if "::" in line}
    if r.returncode != 0 or not ids:
        raise SystemExit(f"check_reliability: cannot collect the reliability tests:\n{r.stdout}{r.stderr}")
    return ids


def problems(
    rows: dict[str, dict[str, object]],
    version: str,
    tests: set[str],
    same: Callable[[str, str], bool] = str.__eq__,
) -> list[str]:
    out = []
    for name, r in sorted(rows.items()):
        status = r.get("status")
        if status == "not run":
            out.append(f"{name}: not run ({r.get('reason')})")
        elif status == "error":
            out.append(f"{name}: error before publishing ({r.get('reason')})")
        elif status == "insufficient":
            out.append(f"{name}: too few trials hit the critical window ({r.get('note')})")
        elif status != "measured":
            out.append(f"{name}: no status (written by an older suite)")
        if r.get("failures") != 0:
            out.append(f"{name}: {r.get('failures')} of {r.get('trials')} trials failed")
        if not same(str(r.get("commit")), version):
            out.append(f"{name}: measured on {r.get('commit')}, the code under check is {version}")
        if r.get("test") not in tests:
            out.append(f"{name}: no test {r.get('test')} marked reliability (a stale row?)")
    for t in sorted(tests - {str(r.get("test")) for r in rows.values()}):
        out.append(f"{t}: writes no row in {RELIABILITY_JSON.name}")
    return out


def main() -> int:
    rows = json.loads(RELIABILITY_JSON.read_text()) if RELIABILITY_JSON.exists() else {}
    version = code_version()
    found = problems(rows, version, marked_tests(), same_code)
    for p in found:
        print(f"check_reliability: {p}")
    if found:
        print(f"check_reliability: {len(found)} problem(s) in {RELIABILITY_JSON.relative_to(REPO)}")
        return 1
    commits = ", ".join(sorted({str(r.get("commit")) for r in rows.values()}))
    print(f"check_reliability: {len(rows)} rows measured on {commits} (the code of {version}), no failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
