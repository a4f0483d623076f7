"""Data sources: SQLite found by header, snapshot fallbacks, files that change while read,
excludes and hooks."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from gofrtest import cli_env, manifest, needs, run_cli, without_dac, write
from hypothesis import given
from hypothesis import strategies as st
from test_consistency import extract_member, ro_mount

from gofr_common.backup import BackupConfig
from gofr_common.backup.config import parse_excludes
from gofr_common.backup.errors import ConfigError
from gofr_common.backup.excludes import compile_excludes
from gofr_common.backup.verify import verify_archive
from gofr_common.backup.writer import SMALL_FILE, write_archive


def _db(path: Path, mode: str = "wal", rows: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute(f"PRAGMA journal_mode={mode}")
    c.execute("PRAGMA wal_autocheckpoint=0")  # keep commits in the -wal file
    c.execute("CREATE TABLE t(i INTEGER PRIMARY KEY, s TEXT)")
    c.execute("BEGIN")
    c.executemany("INSERT INTO t VALUES(?, ?)", [(i, "x" * 100) for i in range(rows)])
    c.execute("COMMIT")
    c.close()


def _members(archive: Path) -> list[str]:
    return [m.name for m in verify_archive(archive, collect_members=True).members]


def _end(archive: Path) -> dict[str, Any]:
    end = verify_archive(archive).end
    assert end is not None
    return end


def test_sqlite_found_by_header_not_name_and_siblings_left_out(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _db(data / "storage" / "index.bin")  # a database with an unhelpful name
    write(data / "storage" / "notes.db", "not a database, just a name")
    # keep a connection open so the -wal and -shm files exist during the backup
    hold = sqlite3.connect(data / "storage" / "index.bin")
    hold.execute("PRAGMA wal_autocheckpoint=0")
    hold.execute("INSERT INTO t VALUES(1000, 'in the wal')")
    hold.commit()
    assert (data / "storage" / "index.bin-wal").exists()
    env = cli_env(data, tmp_path / "b", **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})
    r = run_cli("now", "--json", env=env)
    hold.close()
    assert r.returncode == 0, r.stderr
    archive = tmp_path / "b" / json.loads(r.stdout)["path"]
    end = _end(archive)
    assert end["sqlite_snapshots"] == [str(data / "storage" / "index.bin")]
    names = _members(archive)
    assert "storage/notes.db" in names and "storage/index.bin" in names
    assert not [n for n in names if n.endswith(("-wal", "-shm"))]
    out = tmp_path / "restored.bin"
    extract_member(archive, "storage/index.bin", out)
    c = sqlite3.connect(out)
    assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert c.execute("SELECT s FROM t WHERE i = 1000").fetchone()[0] == "in the wal"


def test_snapshot_off_archives_bytes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _db(data / "s" / "x.db", mode="delete")
    env = cli_env(
        data, tmp_path / "b", **{"GOFR_{P}_BACKUP_PATHS": "s:s", "GOFR_{P}_BACKUP_SQLITE_SNAPSHOT": "false"}
    )
    r = run_cli("now", "--json", env=env)
    assert _end(tmp_path / "b" / json.loads(r.stdout)["path"])["sqlite_snapshots"] == []


def test_read_only_mount_without_a_running_writer_uses_a_copy(tmp_path: Path) -> None:
    """WAL database on a read-only volume, app stopped: -wal left behind, no -shm. SQLite cannot
    open it in place; the snapshot is taken from a private copy and keeps the WAL's commits."""
    data = tmp_path / "data"
    db = data / "s" / "app.db"
    _db(db, "wal")
    c = sqlite3.connect(db)
    c.execute("PRAGMA wal_autocheckpoint=0")
    c.execute("INSERT INTO t VALUES(5000, 'only in the wal')")
    c.commit()
    # simulate an app that stopped without checkpointing: copy the files while it is open
    frozen = tmp_path / "frozen" / "s"
    frozen.mkdir(parents=True)
    for suffix in ("", "-wal"):
        (frozen / ("app.db" + suffix)).write_bytes(Path(str(db) + suffix).read_bytes())
    c.close()
    assert not (frozen / "app.db-shm").exists() and (frozen / "app.db-wal").stat().st_size > 0
    with ro_mount(frozen.parent, tmp_path / "ro") as ro:
        env = cli_env(ro, tmp_path / "b", **{"GOFR_{P}_BACKUP_PATHS": "s:s"})
        r = run_cli("now", "--json", env=env)
        assert r.returncode == 0, r.stderr
        entry = json.loads(r.stdout)
    assert any("snapshot taken from a copy" in w for w in entry["warnings"])
    out = tmp_path / "out.db"
    extract_member(tmp_path / "b" / entry["path"], "s/app.db", out)
    c = sqlite3.connect(out)
    assert c.execute("SELECT s FROM t WHERE i = 5000").fetchone()[0] == "only in the wal"
    assert not (tmp_path / "b" / ".gofr-plot.tmp").exists()


# -- files that change while they are read --------------------------------------------------------
def _cfg(data: Path, backups: Path, paths: str = "s:s") -> BackupConfig:
    return BackupConfig.from_env(
        env={
            "GOFR_PROJECT": "plot",
            "GOFR_PLOT_BACKUP_DATA_DIR": str(data),
            "GOFR_PLOT_BACKUP_DIR": str(backups),
            "GOFR_PLOT_BACKUP_PATHS": paths,
        }
    )


def _read_offset(path: Path) -> int:
    """How far this process has read into ``path`` (0 when it is not open): from /proc."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                with open(f"/proc/self/fdinfo/{fd}") as f:
                    return int(f.readline().split()[1])
        except OSError:
            continue
    return 0


def test_large_file_that_shrinks_mid_read_is_zero_padded_not_corrupt(tmp_path: Path) -> None:
    big = write(tmp_path / "data" / "s" / "big.log", os.urandom(SMALL_FILE + (4 << 20)))
    size = big.stat().st_size
    done = []

    def truncate_during_read() -> bool:  # runs between chunk reads of the real file
        if not done and _read_offset(big):  # its first chunk is read
            os.truncate(big, 1 << 20)
            done.append(1)
        return False

    w = write_archive(
        _cfg(tmp_path / "data", tmp_path / "b"), "daily", datetime.now().astimezone(), truncate_during_read
    )
    assert any("shrank while read" in x for x in w.warnings), w.warnings
    res = verify_archive(w.path, collect_members=True)
    assert res.ok, res.error
    assert next(m for m in res.members if m.name == "s/big.log").size == size


def test_large_file_that_grows_mid_read_is_archived_as_read(tmp_path: Path) -> None:
    big = write(tmp_path / "data" / "s" / "big.log", os.urandom(SMALL_FILE + (4 << 20)))
    size = big.stat().st_size
    done = []

    def append_during_read() -> bool:
        if not done and _read_offset(big):  # its first chunk is read
            with open(big, "ab") as f:
                f.write(b"more\n" * 1000)
            done.append(1)
        return False

    w = write_archive(
        _cfg(tmp_path / "data", tmp_path / "b"), "daily", datetime.now().astimezone(), append_during_read
    )
    assert any("changed while read" in x for x in w.warnings), w.warnings
    res = verify_archive(w.path, collect_members=True)
    assert res.ok and next(m for m in res.members if m.name == "s/big.log").size == size


def test_path_that_changes_kind_between_the_two_walks_is_skipped_not_left_undeclared(tmp_path: Path) -> None:
    """The first walk counts and writes the header (which declares each path's kind); the second
    archives. A path that became a file in between must not be archived under the old declaration,
    and the archive, which declares it and holds none of it, is incomplete: a restore of it must
    not remove what is there now."""
    data = tmp_path / "data"
    write(data / "a" / "one.txt", b"1")
    write(data / "b" / "two.txt", b"2")
    backups = tmp_path / "b"
    done = []

    def swap_b_once_archiving_started() -> bool:
        if not done and any(p.name.endswith(".partial") for p in backups.glob("daily/*")):
            shutil.rmtree(data / "b")
            write(data / "b", b"now a file")
            done.append(1)
        return False

    w = write_archive(
        _cfg(data, backups, "a:a,b:b"), "daily", datetime.now().astimezone(), swap_b_once_archiving_started
    )
    assert done and any("is no longer a dir" in x for x in w.warnings), w.warnings
    assert w.meta["kinds"] == {"a": "dir", "b": "dir"}
    assert sorted(m for m in _members(w.path) if not m.startswith(".gofr")) == ["a", "a/one.txt"]
    assert not w.complete and w.unreadable == [str(data / "b")], w.unreadable
    r = run_cli(
        "restore",
        w.filename,
        "--target",
        str(tmp_path / "r"),
        "--allow-incomplete",
        "--yes",
        env=cli_env(data, backups),
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r" / "a" / "one.txt").read_bytes() == b"1"


def test_small_file_that_keeps_changing_is_retried_then_archived_as_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    hot = write(data / "s" / "hot.log", os.urandom(8 << 20))  # the largest "small" file: a slow read ...
    before = hot.stat().st_mtime_ns
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import os, time
try:  # ... and the writer runs all the time, even on a busy machine: real-time (root), else nice
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
except (OSError, AttributeError):
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except OSError:
        pass
fd = os.open({str(hot)!r}, os.O_WRONLY)
end = time.time() + 60
while time.time() < end:
    os.pwrite(fd, os.urandom(64), 0)
""",
        ]
    )
    try:
        deadline = time.monotonic() + 30
        while hot.stat().st_mtime_ns == before and time.monotonic() < deadline:
            time.sleep(0.01)  # the writer is writing
        w = write_archive(_cfg(data, tmp_path / "b"), "daily", datetime.now().astimezone())
    finally:
        writer.kill()
        writer.wait()
    assert any("kept changing while read (4 tries)" in x for x in w.warnings), w.warnings
    assert verify_archive(w.path).ok and w.complete


def test_unreadable_file_is_reported_and_the_backup_is_incomplete(tmp_path: Path) -> None:
    needs(
        os.geteuid() == 0 and bool(shutil.which("setpriv")),
        "needs root and setpriv to create a file the backup process cannot read",
    )
    data = tmp_path / "data"
    write(data / "s" / "ok.txt", "fine")
    secret = write(data / "s" / "secret.txt", "app's file: uid 1000, mode 0600", 0o600)
    os.chown(secret, 1000, 1000)
    env = cli_env(data, tmp_path / "b", **{"GOFR_{P}_BACKUP_PATHS": "s:s"})
    r = subprocess.run(without_dac("now", "--json"), env=env, capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    entry = json.loads(r.stdout)
    assert entry["complete"] is False and entry["verified"] is True
    assert any("secret.txt" in w for w in entry["warnings"])
    assert "completed with warnings" in r.stderr
    st = run_cli("status", "--json", env=env)
    assert st.returncode == 1 and "incomplete" in json.loads(st.stdout)["reasons"][0]
    assert "INCOMPLETE" in run_cli("list", env=env).stdout
    # a complete backup makes it healthy again
    os.chown(secret, 0, 0)
    assert subprocess.run(without_dac("now"), env=env, capture_output=True).returncode == 0
    assert run_cli("status", env=env).returncode == 0


# -- excludes --------------------------------------------------------------------------------------
CASES = [
    ("*.tmp", "a.tmp", False, True),
    ("*.tmp", "x/y/a.tmp", False, True),
    ("*.tmp", "a.tmpx", False, False),
    ("cache/**", "cache/a", False, True),
    ("cache/**", "cache/a/b", False, True),
    ("cache/**", "cache", True, False),
    ("cache/**", "x/cache/a", False, False),
    ("cache", "x/cache", True, True),
    ("**/cache", "x/y/cache", True, True),
    ("**/cache", "cache", True, True),
    ("sessions/", "sessions", True, True),
    ("sessions/", "sessions", False, False),
    ("/top.txt", "top.txt", False, True),
    ("/top.txt", "x/top.txt", False, False),
    ("a?c", "abc", False, True),
    ("a?c", "a/c", False, False),
    ("[ab].txt", "b.txt", False, True),
    ("[!ab].txt", "b.txt", False, False),
    ("*.lock", "dir.lock", True, True),
    ("logs/*.gz", "logs/x.gz", False, True),
    ("logs/*.gz", "logs/a/x.gz", False, False),
]


@pytest.mark.parametrize("pattern,rel,is_dir,expected", CASES)
def test_exclude_matching_rules(pattern: str, rel: str, is_dir: bool, expected: bool) -> None:
    assert compile_excludes((pattern,))(rel, is_dir) is expected


@given(st.text(max_size=30), st.text(alphabet="ab/.*", max_size=12), st.booleans())
def test_exclude_parser_never_crashes(value: str, rel: str, is_dir: bool) -> None:
    try:
        pats = parse_excludes("X", value)
    except ConfigError as e:
        assert "X=" in str(e)
        return
    compile_excludes(pats)(rel.strip("/") or "a", is_dir)


def test_excludes_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for rel in (
        "keep.txt",
        "a.tmp",
        "deep/b.tmp",
        "cache/x/y.bin",
        "app.lock",
        "sessions/s1",
        "sub/sessions/s2",
    ):
        write(data / "s" / rel, "x")
    env = cli_env(
        data,
        tmp_path / "b",
        **{"GOFR_{P}_BACKUP_PATHS": "s:s", "GOFR_{P}_BACKUP_EXCLUDE": "*.tmp, cache/**, *.lock, /sessions/"},
    )
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0, r.stderr
    names = set(_members(tmp_path / "b" / json.loads(r.stdout)["path"]))
    assert names == {"s", "s/keep.txt", "s/deep", "s/cache", "s/sub", "s/sub/sessions", "s/sub/sessions/s2"}
    bad = run_cli("now", env={**env, "GOFR_PLOT_BACKUP_EXCLUDE": "*.tmp,,x"})
    assert bad.returncode == 2 and "GOFR_PLOT_BACKUP_EXCLUDE" in bad.stderr


# -- hooks -----------------------------------------------------------------------------------------
def _hook_env(tmp_path: Path, **kw: str) -> dict[str, str]:
    data = tmp_path / "data"
    write(data / "s" / "a.txt", "a")
    return cli_env(data, tmp_path / "b", **{"GOFR_{P}_BACKUP_PATHS": "s:s", **kw})


def test_pre_hook_output_is_archived_and_post_hook_gets_the_outcome(tmp_path: Path) -> None:
    out = tmp_path / "post.env"
    env = _hook_env(
        tmp_path,
        **{
            "GOFR_{P}_BACKUP_PRE_HOOK": f"echo dumped > {tmp_path}/data/s/dump.sql && echo pre-ran",
            "GOFR_{P}_BACKUP_POST_HOOK": f"env | grep ^GOFR_BACKUP_ | sort > {out}",
        },
    )
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0, r.stderr
    entry = json.loads(r.stdout)
    assert "s/dump.sql" in _members(tmp_path / "b" / entry["path"])
    assert "pre-hook: pre-ran" in r.stderr
    got = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert got["GOFR_BACKUP_STATUS"] == "ok" and got["GOFR_BACKUP_HOOK"] == "post"
    assert got["GOFR_BACKUP_ARCHIVE"] == str(tmp_path / "b" / entry["path"])
    assert got["GOFR_BACKUP_ERROR"] == "" and got["GOFR_BACKUP_TIER"] == "daily"
    assert int(got["GOFR_BACKUP_SIZE_BYTES"]) == entry["size_bytes"]


def test_failing_pre_hook_aborts_and_post_hook_still_runs(tmp_path: Path) -> None:
    out = tmp_path / "post.env"
    env = _hook_env(
        tmp_path,
        **{
            "GOFR_{P}_BACKUP_PRE_HOOK": "echo cannot dump >&2; exit 3",
            "GOFR_{P}_BACKUP_POST_HOOK": f"env | grep ^GOFR_BACKUP_ > {out}",
        },
    )
    r = run_cli("now", env=env)
    assert r.returncode == 1
    assert "pre-hook exited with status 3; no backup was made" in r.stderr
    assert not list((tmp_path / "b").glob("daily/*.tar.gz"))
    got = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert got["GOFR_BACKUP_STATUS"] == "failed" and "pre-hook" in got["GOFR_BACKUP_ERROR"]
    st = run_cli("status", "--json", env=env)
    assert st.returncode == 1 and "pre-hook" in json.loads(st.stdout)["last_failure"]["error"]


def test_timed_out_pre_hook_is_killed_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    env = _hook_env(
        tmp_path,
        **{
            "GOFR_{P}_BACKUP_PRE_HOOK": f"sleep 60 & echo $! > {pidfile}; wait",
            "GOFR_{P}_BACKUP_HOOK_TIMEOUT": "1",
        },
    )
    t0 = time.monotonic()
    r = run_cli("now", env=env)
    assert r.returncode == 1 and "timed out after 1s" in r.stderr
    assert time.monotonic() - t0 < 15
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    assert not (tmp_path / "b" / "manifest.json").exists() or manifest(tmp_path / "b") == []
    assert not list((tmp_path / "b").glob("daily/*"))
