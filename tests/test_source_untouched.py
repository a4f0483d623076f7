"""A backup leaves the source as it found it (issue 13): no -wal/-shm files created beside an idle
WAL database, no directory mtime changed."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from gofrtest import cli_env, manifest, run_cli

from gofr_common.backup.archive_format import open_tar_stream


def _listing(d: Path) -> dict[str, tuple[int, int]]:
    out = {".": (0, os.stat(d).st_mtime_ns)}
    for n in os.listdir(d):
        st = os.lstat(d / n)
        out[n] = (st.st_size, st.st_mtime_ns)
    return out


def test_an_idle_wal_database_is_snapshotted_without_touching_its_directory(tmp_path: Path) -> None:
    # issue 13: opening an idle WAL database read-only left app.db-shm and app.db-wal in the
    # (writable) source directory, and changed its mtime
    data = tmp_path / "data"
    (data / "db").mkdir(parents=True)
    con = sqlite3.connect(data / "db" / "app.db")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (i INTEGER)")
    con.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5000)])
    con.commit()
    con.close()  # the last connection: -wal and -shm are gone, the database is idle
    before = _listing(data / "db")
    env = cli_env(data, tmp_path / "backups", **{"GOFR_{P}_BACKUP_PATHS": "db:db"})
    r = run_cli("now", env=env)
    assert r.returncode == 0, r.stderr
    assert _listing(data / "db") == before
    [e] = manifest(tmp_path / "backups")
    assert e["warnings"] == []  # an idle database is the normal case, not a warning
    with open_tar_stream(tmp_path / "backups" / e["path"]) as tar:
        for m in tar:
            if m.name == "db/app.db":
                out = tmp_path / "restored.db"
                out.write_bytes(tar.extractfile(m).read())  # type: ignore[union-attr]
    check = sqlite3.connect(out)
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert check.execute("SELECT count(*), sum(i) FROM t").fetchone() == (5000, sum(range(5000)))
