"""Incremental mode attacked as a new operator would (issue 17): odd trees, unreadable paths,
kills and hand edits between runs, each through the CLI as a subprocess. Every test here failed
on the code before its fix."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from gofrtest import cli_env, needs, run_cli, without_dac, write
from test_remote import KEY, SECRET, S3Server, s3  # noqa: F401  (s3 is a fixture)


@pytest.fixture
def inc(tmp_path: Path) -> dict[str, Any]:
    data = tmp_path / "data"
    write(data / "storage" / "sec" / "x.txt", "x\n")
    write(data / "storage" / "sec" / "sub" / "y.txt", "y\n")
    write(data / "storage" / "other.txt", "o\n")
    backups = tmp_path / "backups"
    env = cli_env(
        data, backups, GOFR_PLOT_BACKUP_MODE="incremental", GOFR_PLOT_BACKUP_PATHS="storage:storage"
    )
    return {"data": data, "backups": backups, "env": env, "tmp": tmp_path}


def now_as_user(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """`now` without root's read-anything capabilities; a second apart, so names differ."""
    time.sleep(1.05)
    r = subprocess.run(without_dac("now", "--json"), env=env, capture_output=True, text=True)
    assert r.returncode in (0, 3), r.stderr
    return r.returncode, json.loads(r.stdout)


def test_latest_never_names_a_point_whose_chain_restore_refuses(inc: dict[str, Any]) -> None:
    """A chain whose middle incremental is incomplete (as the manifest records it: written before
    a run started a full after an incomplete archive, or by a rebuilt manifest): `restore NAME` of
    the complete point after it refuses without --allow-incomplete. `status` must not call such a
    point restorable, and `restore --latest` (what status and the refusal itself advise) must
    restore, not refuse."""
    env, storage = inc["env"], inc["data"] / "storage"
    names = []
    for i in range(3):
        write(storage / f"day{i}.txt", f"{i}\n")
        time.sleep(1.05)
        r = run_cli("now", "--json", env=env)
        assert r.returncode == 0, r.stderr
        names.append(json.loads(r.stdout)["filename"])
    mf = inc["backups"] / "manifest.json"
    doc = json.loads(mf.read_text())
    for e in doc["backups"]:
        if e["filename"] == names[1]:
            e["complete"] = False
    mf.write_text(json.dumps(doc))
    r = run_cli("restore", names[2], "--target", str(inc["tmp"] / "refused"), "--yes", env=env)
    assert r.returncode == 2 and "--allow-incomplete" in r.stderr, r.stderr
    st = run_cli("status", "--json", env=env)
    restorable = json.loads(st.stdout)["restorable"]
    assert restorable is not None and restorable["filename"] == names[0], (
        "status names a point restore refuses"
    )
    target = inc["tmp"] / "copy"
    r = run_cli("restore", "--latest", "--target", str(target), "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert f"Restored {names[0]}" in r.stdout, r.stdout
    assert f"passing over the newer {names[2]}" in r.stderr and "which is incomplete" in r.stderr
    assert sorted(p.name for p in (target / "storage").glob("day*")) == ["day0.txt"]


@pytest.mark.parametrize("paths", ["db:dbs/app.db", "dbs:dbs"], ids=["file-path", "in-a-dir"])
def test_a_wal_commit_is_in_the_next_incremental(tmp_path: Path, paths: str) -> None:
    """A SQLite database in WAL mode whose app keeps it open: a commit lands in ``app.db-wal``,
    the database file itself keeps its size, mtime and ctime. The incremental after it must hold
    the commit, whether the database is a configured path of its own (a file path, whose -wal is
    no entry of any listing) or lies in a configured directory."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    (data / "dbs").mkdir(parents=True)
    env = cli_env(data, backups, GOFR_PLOT_BACKUP_MODE="incremental", GOFR_PLOT_BACKUP_PATHS=paths)
    db = sqlite3.connect(data / "dbs" / "app.db")
    try:
        db.execute("pragma journal_mode=wal")
        db.execute("create table t(x)")
        db.execute("insert into t values (1)")
        db.commit()
        r = run_cli("now", "--json", env=env)
        assert r.returncode == 0 and json.loads(r.stdout)["kind"] == "full", r.stderr
        before = os.stat(data / "dbs" / "app.db")
        db.execute("insert into t values (2)")
        db.commit()
        after = os.stat(data / "dbs" / "app.db")
        assert (before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
            after.st_size,
            after.st_mtime_ns,
            after.st_ctime_ns,
        ), "the commit must stay in the -wal for this test to mean anything"
        time.sleep(1.05)
        r = run_cli("now", "--json", env=env)
        assert r.returncode == 0, r.stderr
        point = json.loads(r.stdout)
        assert point["kind"] == "incremental"
    finally:
        db.close()
    target = tmp_path / "copy"
    r = run_cli("restore", point["filename"], "--target", str(target), "--yes", env=env)
    assert r.returncode == 0, r.stderr
    name = paths.split(":")[0]
    restored = target / name if name == "db" else target / name / "app.db"
    got = sqlite3.connect(restored)
    try:
        assert got.execute("select count(*) from t").fetchone()[0] == 2
    finally:
        got.close()


def test_latest_passes_over_a_point_after_a_truncated_link(inc: dict[str, Any]) -> None:
    """An archive in the middle of a chain truncated on disk (no verify has read it yet): status
    names the newest point before it as restorable; `restore --latest` must restore that one,
    not pick the newest point and fail on the truncated link."""
    env, storage = inc["env"], inc["data"] / "storage"
    names = []
    for i in range(4):
        write(storage / f"f{i}.bin", os.urandom(4000))
        time.sleep(1.05)
        r = run_cli("now", "--json", env=env)
        assert r.returncode == 0, r.stderr
        names.append(json.loads(r.stdout)["filename"])
    middle = inc["backups"] / "daily" / names[2]
    middle.write_bytes(middle.read_bytes()[:-700])
    st = run_cli("status", "--json", env=env)
    assert json.loads(st.stdout)["restorable"]["filename"] == names[1]
    target = inc["tmp"] / "copy"
    r = run_cli("restore", "--latest", "--target", str(target), "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert f"Restored {names[1]}" in r.stdout, r.stdout
    assert f"passing over the newer {names[3]}" in r.stderr, r.stderr
    assert sorted(p.name for p in (target / "storage").glob("f*")) == ["f0.bin", "f1.bin"]


def test_the_run_after_an_incomplete_archive_writes_a_full(
    inc: dict[str, Any],
    s3: S3Server,  # noqa: F811
) -> None:
    """A directory unreadable for one run makes that incremental incomplete; `sync` (after each
    `now`) never uploads an incomplete archive. An incremental over it could be restored only
    with --allow-incomplete locally, and never off-site (its parent is not there, yet `sync`
    said "up to date" and `list --remote` showed nothing wrong). The next run writes a full: the
    day after the unreadable one is restorable locally and from the remote alone."""
    needs(shutil.which("setpriv") is not None and os.geteuid() == 0, "needs root and setpriv")
    env = {
        **inc["env"],
        "GOFR_PLOT_BACKUP_REMOTE_URL": "s3://backups/off",
        "GOFR_PLOT_BACKUP_REMOTE_ENDPOINT": s3.endpoint,
        "GOFR_PLOT_BACKUP_REMOTE_ACCESS_KEY_ID": KEY,
        "GOFR_PLOT_BACKUP_REMOTE_SECRET_ACCESS_KEY": SECRET,
    }
    sec = inc["data"] / "storage" / "sec"
    code, full = now_as_user(env)
    assert code == 0 and full["kind"] == "full"
    os.chmod(sec, 0)
    try:
        code, bad = now_as_user(env)
    finally:
        os.chmod(sec, 0o755)
    assert code == 3 and bad["complete"] is False
    code, good = now_as_user(env)
    assert code == 0 and good["complete"] is True
    assert good["kind"] == "full", good
    r = run_cli("sync", env=env)
    assert r.returncode == 0, r.stderr
    shutil.rmtree(inc["backups"])
    target = inc["tmp"] / "copy"
    r = run_cli("restore", "--from-remote", "--latest", "--target", str(target), "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert f"Restored {good['filename']}" in r.stdout, r.stdout
    assert sorted(p.name for p in (target / "storage").rglob("*")) == [
        "other.txt",
        "sec",
        "sub",
        "x.txt",
        "y.txt",
    ]
