"""Shared helpers. Everything is real: files in temp dirs, the CLI as a subprocess."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from datetime import datetime, timedelta
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
    from datetime import UTC

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
RELIABILITY_JSON = REPO / "docs" / "reliability.json"
RELIABILITY_MD = REPO / "docs" / "RELIABILITY.md"


def publish(scenario: str, trials: int, failures: int, guarantee: str, test: str, note: str = "") -> None:
    """Record one row of docs/RELIABILITY.md (rows of tests that did not run are kept as they were)."""
    rows = json.loads(RELIABILITY_JSON.read_text()) if RELIABILITY_JSON.exists() else {}
    rows[scenario] = {
        "trials": trials,
        "failures": failures,
        "guarantee": guarantee,
        "test": test,
        "note": note,
    }
    RELIABILITY_JSON.parent.mkdir(exist_ok=True)
    RELIABILITY_JSON.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    lines = [
        "# Reliability",
        "",
        "Generated by the test suite (`tests/test_faults.py`, `tests/test_security.py`) from what the",
        "tests measured; do not edit by hand. Faults are injected for real: SIGKILL to real processes,",
        "a real full file system (tmpfs), real corruption of files on disk, real read-only mounts.",
        "Trials are seeded (`GOFR_FAULT_SEED`, default 1), so a failure can be replayed.",
        "",
        "| Scenario | Trials | Failures | What is guaranteed | Test |",
        "|---|---|---|---|---|",
    ]
    for name, r in sorted(rows.items()):
        g = r["guarantee"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(f"| {name} | {r['trials']} | {r['failures']} | {g} | `{r['test']}` |")
    RELIABILITY_MD.write_text("\n".join(lines) + "\n")
