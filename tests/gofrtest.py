"""Shared helpers. Everything is real: files in temp dirs, the CLI as a subprocess."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
# set by .ci/run: a guarantee whose test cannot run here is a failure, not a skip
REQUIRE_ALL = os.environ.get("GOFR_REQUIRE_ALL") == "1"


def needs(ok: bool, why: str) -> None:
    """Skip the calling test when ``ok`` is false (``why`` says what is missing), except in CI
    (GOFR_REQUIRE_ALL=1), where every guarantee must be exercised and a missing tool fails."""
    if ok:
        return
    if REQUIRE_ALL:
        pytest.fail(f"not exercised: {why} (GOFR_REQUIRE_ALL=1: CI must provide it)")
    pytest.skip(why)


def cli_env(data: Path, backups: Path, project: str = "plot", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOFR_")}
    p = project.upper().replace("-", "_")
    env.update(
        {
            "GOFR_PROJECT": project,
            f"GOFR_{p}_BACKUP_DATA_DIR": str(data),
            f"GOFR_{p}_BACKUP_DIR": str(backups),
            "PYTHONPATH": str(SRC),
            # the suite runs as root in CI; the service refuses that unless told (tested on its own)
            "GOFR_BACKUP_ALLOW_ROOT": "true",
        }
    )
    env.update({k.replace("{P}", p): v for k, v in extra.items()})
    return env


def run_cli(
    *args: str, env: dict[str, str], input: str | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gofr_common.backup", *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def popen_cli(*args: str, env: dict[str, str], **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gofr_common.backup", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def without_dac(*args: str) -> list[str]:
    """The CLI as root but without the capabilities that let root read anyone's files: the backup
    process then sees permissions exactly as a non-root backup user would (needs setpriv)."""
    return [
        "setpriv",
        "--bounding-set=-dac_override,-dac_read_search",
        sys.executable,
        "-m",
        "gofr_common.backup",
        *args,
    ]


def write(p: Path, data: bytes | str, mode: int = 0o644, mtime: int | None = None) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(p, mode)
    if mtime is not None:
        os.utime(p, (mtime, mtime))
    return p


def make_app(root: Path) -> tuple[Path, Path]:
    """A GOFR-like layout: root/data/{storage,auth,db.sqlite?...} and the sibling root/logs."""
    data = root / "data"
    logs = root / "logs"
    t0 = 1_700_000_000
    write(data / "storage" / "doc1.json", json.dumps({"id": 1, "text": "hello"}), 0o644, t0)
    write(data / "storage" / "nested" / "deep" / "blob.bin", os.urandom(200_000), 0o600, t0 + 1)
    write(data / "storage" / "ünïcødé – файл.txt", "non-ascii name\n", 0o640, t0 + 2)
    write(data / "storage" / "exec.sh", "#!/bin/sh\necho hi\n", 0o755, t0 + 3)
    (data / "storage" / "empty-dir").mkdir(parents=True)
    os.chmod(data / "storage" / "empty-dir", 0o750)
    os.symlink("doc1.json", data / "storage" / "link-to-doc")
    os.symlink("nested/deep", data / "storage" / "link-to-dir")
    os.symlink("does-not-exist", data / "storage" / "dangling")
    write(data / "storage" / ("a" * 120) / ("b" * 120 + ".txt"), "long path\n", 0o644, t0 + 4)
    write(data / "auth" / "tokens.json", '{"t": "secret"}', 0o600, t0 + 5)
    write(data / "storage" / "group-writable.txt", "g+w\n", 0o664, t0 + 9)  # tarfile's data filter drops g+w
    write(data / "storage" / "read-only.txt", "r\n", 0o400, t0 + 10)  # ... and adds u+w
    write(data / "config.json", '{"single": "file"}', 0o644, t0 + 6)
    write(logs / "app.log", "line 1\nline 2\n" * 1000, 0o644, t0 + 7)
    os.utime(data / "storage" / "nested" / "deep", (t0 + 8, t0 + 8))
    return data, logs


PATHS = "storage:storage,auth:auth,cfg:config.json,logs:../logs"


def snapshot(root: Path, owners: bool = True) -> dict[str, tuple[Any, ...]]:
    """Everything that a restore must bring back, per relative path."""
    out: dict[str, tuple[Any, ...]] = {}
    if not os.path.lexists(root):
        return out
    paths = [root]
    if root.is_dir() and not root.is_symlink():
        paths += sorted(root.rglob("*"))
    for p in paths:
        st = os.lstat(p)
        rel = "." if p == root else str(p.relative_to(root))
        own = (st.st_uid, st.st_gid) if owners else ()
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(p), int(st.st_mtime), *own)
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("dir", stat.S_IMODE(st.st_mode), int(st.st_mtime), *own)
        else:
            out[rel] = (
                "file",
                stat.S_IMODE(st.st_mode),
                int(st.st_mtime),
                hashlib.sha256(p.read_bytes()).hexdigest(),
                *own,
            )
    return out


@pytest.fixture
def app(tmp_path: Path) -> dict[str, Any]:
    data, logs = make_app(tmp_path / "app")
    backups = tmp_path / "backups"
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": PATHS})
    return {"data": data, "logs": logs, "backups": backups, "env": env, "tmp": tmp_path}


def manifest(backups: Path) -> list[dict[str, Any]]:
    return json.loads((backups / "manifest.json").read_text())["backups"]


def partials(root: Path) -> dict[Path, int]:
    """Every ``*.partial`` under ``root`` with its size, read while a backup may be creating and
    removing directories (its ``.gofr-*.tmp``) and renaming the partial: ``os.walk`` skips a
    directory that vanishes under it, where ``Path.glob``/``rglob`` raise FileNotFoundError."""
    found: dict[Path, int] = {}
    for d, _dirs, files in os.walk(root):
        for f in files:
            if f.endswith(".partial"):
                with contextlib.suppress(FileNotFoundError):
                    found[Path(d, f)] = os.stat(os.path.join(d, f)).st_size
    return found


def craft_archive(
    path: Path,
    members: list[tuple[tarfile.TarInfo, bytes | None]],
    project: str = "plot",
    paths: dict[str, str] | None = None,
    end: dict[str, Any] | None = None,
    meta_extra: dict[str, Any] | None = None,
) -> Path:
    """A gzip archive in our format (meta first, end marker last, valid .sha256) holding
    arbitrary, possibly hostile, members: so that restore's refusal cannot come from a checksum.
    ``end`` adds to (or overrides) the end marker, ``meta_extra`` the header."""
    buf = io.BytesIO()
    meta = {
        "format": 1,
        "project": project,
        "tier": "daily",
        "created": "2026-01-01T02:00:00+00:00",
        "compression": "gzip",
        "paths": paths or {"storage": "storage"},
        "kinds": {},
        "file_count": len(members),
        "source_bytes": 0,
        **(meta_extra or {}),
    }
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:

        def add_json(name: str, obj: dict[str, Any]) -> None:
            b = json.dumps(obj).encode()
            ti = tarfile.TarInfo(name)
            ti.size = len(b)
            tar.addfile(ti, io.BytesIO(b))

        add_json(".gofr-backup.json", meta)
        for ti, data in members:
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
        add_json(".gofr-backup-end.json", {"file_count": len(members), "complete": True, **(end or {})})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    return path


Members = list[tuple[tarfile.TarInfo, bytes | None]]


def rewrite_archive(archive: Path, backups: Path, edit: Callable[[Members], Members]) -> None:
    """Rewrite a gzip archive of ours with its members (each with its content) passed through
    ``edit``, then re-sign it: its .sha256 and the manifest's checksum and size are recomputed, so
    every checksum agrees and only a check of the content itself can tell."""
    with tarfile.open(archive, "r:gz") as src:
        members: Members = [(m, src.extractfile(m).read() if m.isreg() else None) for m in src]  # type: ignore[union-attr]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for m, data in edit(members):
            if data is not None:
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
    archive.write_bytes(buf.getvalue())
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    archive.with_name(archive.name + ".sha256").write_text(f"{digest}  {archive.name}\n")
    doc = json.loads((backups / "manifest.json").read_text())
    for e in doc["backups"]:
        if e["filename"] == archive.name:
            e["sha256"], e["size_bytes"] = digest, len(buf.getvalue())
    (backups / "manifest.json").write_text(json.dumps(doc))


def tinfo(
    name: str, type: bytes = tarfile.REGTYPE, data: bytes = b"x", linkname: str = "", mode: int = 0o644
) -> tuple[tarfile.TarInfo, bytes | None]:
    ti = tarfile.TarInfo(name)
    ti.type = type
    ti.mode = mode
    ti.linkname = linkname
    if type == tarfile.REGTYPE:
        ti.size = len(data)
        return ti, data
    return ti, None


class SimClock:
    """A clock for the service that jumps straight to each wake-up time."""

    def __init__(self, start: datetime, until: datetime | None = None) -> None:
        self.t = start
        self.tz = start.tzinfo
        self.until = until

    def now(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)

    def wait_until(self, when: datetime, stop: Any) -> bool:
        if self.until is not None and utc(when) > utc(self.until):
            self.t = self.until
            return True
        if utc(when) > utc(self.t):
            self.t = when
        return bool(stop.is_set())


def utc(t: datetime) -> datetime:
    return t.astimezone(UTC)


@pytest.fixture
def chdir_tmp(tmp_path: Path) -> Iterator[Path]:
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


# -- docs/RELIABILITY.md: the fault tests publish what they measured ---------------------------------
# (GOFR_RELIABILITY_JSON points elsewhere: the test of this machinery writes a table of its own)
RELIABILITY_JSON = Path(os.environ.get("GOFR_RELIABILITY_JSON") or REPO / "docs" / "reliability.json")
RELIABILITY_MD = RELIABILITY_JSON.with_name("RELIABILITY.md")
# the generated files themselves do not make the tree "dirty": they are the output, not the input
GENERATED = ("docs/RELIABILITY.md", "docs/reliability.json")


def reliability(scenario: str, guarantee: str) -> pytest.MarkDecorator:
    """Mark a test as the source of one row of docs/RELIABILITY.md. ``scenario`` may name the
    test's parameters (``"Corruption: {where}"``). The test takes the ``evidence`` fixture, counts
    its trials with it and publishes them; tests/conftest.py writes the row of a test that was
    skipped ("not run") or that failed before it published ("error"), so no old figure survives."""
    return pytest.mark.reliability(scenario=scenario, guarantee=guarantee)


def _git(*args: str) -> str:
    r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return r.stdout


_VERSION: list[str] = []


def code_version() -> str:
    """The commit the code under test is at (``git rev-parse --short HEAD``), with ``-dirty`` when
    the work tree differs from it (the generated reliability files aside); computed once per run."""
    if not _VERSION:
        try:
            head = _git("rev-parse", "--short", "HEAD").strip()
            excl = [f":(exclude){g}" for g in GENERATED]
            dirty = _git("status", "--porcelain", "--", ".", *excl).strip()
            _VERSION.append(head + ("-dirty" if dirty else ""))
        except (OSError, RuntimeError):
            _VERSION.append("unknown")
    return _VERSION[0]


def scenario_of(item: pytest.Item) -> tuple[str, str] | None:
    """(scenario, guarantee) of a test marked with ``reliability``, or None."""
    mark = item.get_closest_marker("reliability")
    if mark is None:
        return None
    params = getattr(getattr(item, "callspec", None), "params", {})
    return mark.kwargs["scenario"].format(**params), mark.kwargs["guarantee"]


class Evidence:
    """The trials of one reliability test, counted as they run: a trial that fails is counted and
    the loop goes on; ``publish`` writes the real counts and only then fails the test."""

    def __init__(self, scenario: str, guarantee: str, test: str) -> None:
        self.scenario, self.guarantee, self.test = scenario, guarantee, test
        self.trials = 0
        self.failures: list[tuple[int, list[str]]] = []
        self.shortfalls: list[str] = []  # the trials did not exercise what they had to
        self.published = False

    @contextlib.contextmanager
    def trial(self) -> Iterator[list[str]]:
        """One trial. It fails if it appends to the yielded list of problems or raises (an
        assertion or anything else); either way the failure is counted and the loop goes on."""
        i = self.trials
        self.trials += 1
        problems: list[str] = []
        try:
            yield problems
        except Exception as e:  # noqa: BLE001 - a crashing trial is a failed trial, counted
            problems.append(f"{type(e).__name__}: {str(e).strip()[:500]}")
        if problems:
            self.failures.append((i, problems))

    def count(self, ok: bool, problem: str = "") -> None:
        """A trial whose outcome is already known (e.g. one read by a reader thread)."""
        i = self.trials
        self.trials += 1
        if not ok:
            self.failures.append((i, [problem]))

    def require(self, ok: bool, shortfall: str) -> None:
        """A condition on the trials as a whole (did enough of them hit the critical window?)."""
        if not ok:
            self.shortfalls.append(shortfall)

    def publish(self, note: str = "") -> None:
        """Write the row with the real counts, then fail the test if anything failed."""
        failed = len(self.failures)
        write_row(
            self.scenario,
            {
                "status": "measured" if not self.shortfalls else "insufficient",
                "trials": self.trials,
                "failures": failed,
                "guarantee": self.guarantee,
                "test": self.test,
                "note": "; ".join([note, *self.shortfalls] if note else self.shortfalls),
            },
        )
        self.published = True
        assert not self.failures, f"{failed} of {self.trials} trial(s) failed; first: {self.failures[:3]}"
        assert not self.shortfalls, self.shortfalls


EVIDENCE = pytest.StashKey[Evidence]()


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Evidence:
    sc = scenario_of(request.node)
    assert sc is not None, "a test that takes `evidence` must be marked with gofrtest.reliability(...)"
    ev = Evidence(sc[0], sc[1], request.node.nodeid)
    request.node.stash[EVIDENCE] = ev
    return ev


def report_unpublished(item: pytest.Item, outcome: str, reason: str) -> None:
    """The row of a marked test that did not publish: skipped (``not run``), or stopped by an
    error before it published (with the trials it had counted). Never keeps an old figure."""
    sc = scenario_of(item)
    ev = item.stash.get(EVIDENCE, None)
    if sc is None or (ev is not None and ev.published):
        return
    failures = len(ev.failures) if ev is not None else 0
    write_row(
        sc[0],
        {
            "status": outcome,
            "reason": " ".join(reason.split())[:300],
            "trials": ev.trials if ev is not None else 0,
            "failures": failures,
            "guarantee": sc[1],
            "test": item.nodeid,
            "note": "",
        },
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """(A hook; tests/conftest.py installs it.) A reliability test that was skipped writes
    "not run (reason)" in its row, one that failed before it published writes "error", one that
    passed without publishing writes "error" too; none keeps the figure of an earlier run."""
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    if rep.skipped:
        report_unpublished(item, "not run", skip_reason(rep))
    elif rep.failed and rep.when in ("setup", "call"):
        why = call.excinfo.exconly().strip().splitlines() if call.excinfo is not None else []
        report_unpublished(item, "error", why[0] if why else "failed")
    elif rep.passed and rep.when == "call":
        report_unpublished(item, "error", "the test passed without publishing its figures")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """(A hook; tests/conftest.py installs it.) One line that says how many guarantees this run
    did not exercise, and why (CI, with GOFR_REQUIRE_ALL=1, fails them instead)."""
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


def skip_reason(rep: pytest.TestReport) -> str:
    longrepr = rep.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def write_row(scenario: str, row: dict[str, Any]) -> None:
    """Record one row of docs/reliability.json and regenerate docs/RELIABILITY.md from it (under
    a lock: pytest-xdist workers write rows concurrently)."""
    import fcntl

    RELIABILITY_JSON.parent.mkdir(exist_ok=True)
    with open(RELIABILITY_JSON.with_name(".reliability.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(RELIABILITY_JSON.read_text()) if RELIABILITY_JSON.exists() else {}
        row["commit"] = code_version()
        row["date"] = datetime.now(UTC).date().isoformat()
        rows[scenario] = row
        RELIABILITY_JSON.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
        RELIABILITY_MD.write_text(render_markdown(rows))


def failures_cell(r: dict[str, Any]) -> str:
    status = r.get("status", "measured")
    if status == "not run":
        return f"not run ({r.get('reason', '')})"
    if status == "error":
        return f"{r['failures']} + error before publishing ({r.get('reason', '')})"
    if status == "insufficient":
        return f"{r['failures']}, too few trials hit the critical window"
    return str(r["failures"])


def render_markdown(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Reliability",
        "",
        "Generated by the test suite (each row by the test named in it, marked `reliability`) from what",
        "the tests measured; do not edit by hand. Faults are injected for real: SIGKILL to real",
        "processes, a real full file system (tmpfs), real corruption of files on disk, real read-only",
        "mounts. Trials are seeded (`GOFR_FAULT_SEED`, default 1), so a failure can be replayed. A",
        "failing trial is counted, not asserted away: the row is written with the real counts before",
        'the test fails. A test that did not run says "not run" and why; no figure is carried over',
        "from an earlier run. *Measured* is the commit (`-dirty`: with uncommitted changes) and the UTC",
        "date of the run that wrote the row. `tests/check_reliability.py` (run by `.ci/run`) fails on",
        "any failure, any row not run, and any row measured on other code than the commit checked.",
        "",
        "| Scenario | Trials | Failures | What is guaranteed | Measured | Test |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in sorted(rows.items()):
        g = r["guarantee"] + (f" ({r['note']})" if r.get("note") else "")
        trials = r["trials"] if r.get("status", "measured") != "not run" else "-"
        lines.append(
            f"| {name} | {trials} | {failures_cell(r)} | {g} | {r.get('commit', '?')}, "
            f"{r.get('date', '?')} | `{r['test']}` |"
        )
    return "\n".join(lines) + "\n"
