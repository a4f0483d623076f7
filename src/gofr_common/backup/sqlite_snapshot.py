"""Consistent snapshots of live SQLite databases (a data source beside plain files).

A database is recognised by its 16-byte header, not its name. It is copied with SQLite's online
backup API in one step: one read transaction, so the copy is exactly the database as of one commit.
In WAL mode the writer is not blocked at all; in rollback-journal mode its next commit waits until
the copy is done (it needs a busy timeout, as every SQLite writer beside a reader does).

A WAL database that no connection has open (no ``-wal`` beside it) is read with ``immutable=1``,
which creates no ``-wal``/``-shm`` file and leaves the source directory as it was; the snapshot
counts only if the database file did not change while it was read (else it is taken live).

On a read-only data volume SQLite opens a WAL database through a read-only ``-shm`` while a writer
has it open. When it cannot open the database where it is (no ``-shm`` because no writer is
running, or a hot journal that only a writer may roll back), the database file and its ``-wal`` or
``-journal`` are copied to a private temp dir and opened there, where SQLite recovers them.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import quote

HEADER = b"SQLite format 3\x00"
SIBLINGS = ("-wal", "-shm", "-journal")
BUSY_TIMEOUT_MS = 30_000


class SnapshotError(Exception):
    pass


def is_sqlite(header: bytes) -> bool:
    return header[:16] == HEADER


def _copy(src: sqlite3.Connection, dst_path: Path) -> None:
    dst = sqlite3.connect(dst_path)
    try:
        src.backup(dst, pages=-1)  # one step = one read transaction = one consistent snapshot
        dst.commit()
    finally:
        dst.close()


def _uri(path: Path, **params: str) -> str:
    q = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{quote(str(path))}?{q}"


def _idle_wal(path: Path) -> bool:
    """A WAL-mode database (header bytes 18-19 are 2) with no ``-wal`` or ``-shm``: no connection
    has it open, and opening it normally would create both, in the source directory."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return (
        header[18:20] == b"\x02\x02"
        and not os.path.lexists(f"{path}-wal")
        and not os.path.lexists(f"{path}-shm")
    )


def _unchanged(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_ino, b.st_size, b.st_mtime_ns)


def snapshot(src_path: Path, dst_path: Path) -> str:
    """Write a consistent copy of the database at ``src_path`` to ``dst_path``.
    Returns how it was taken ("idle", "live" or "copied"). Raises SnapshotError."""
    for _ in range(3):
        if not _idle_wal(src_path):
            break
        try:  # nobody has it open: read it as an immutable file, touching nothing beside it
            before = os.stat(src_path)
            src = sqlite3.connect(_uri(src_path, mode="ro", immutable="1"), uri=True)
            try:
                _copy(src, dst_path)
            finally:
                src.close()
            if _unchanged(before, os.stat(src_path)):
                return "idle"
        except (sqlite3.Error, OSError):
            pass
        dst_path.unlink(missing_ok=True)  # a writer came and changed it: take it again, or live
    try:
        src = sqlite3.connect(_uri(src_path, mode="ro"), uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            src.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            _copy(src, dst_path)
            return "live"
        finally:
            src.close()
    except sqlite3.Error as first:
        dst_path.unlink(missing_ok=True)
        err = first
    # fall back: copy the files to a writable place and let SQLite recover them there
    work = dst_path.with_name(dst_path.name + ".work")
    work.mkdir(mode=0o700)
    try:
        local = work / src_path.name
        shutil.copyfile(src_path, local)
        for suffix in ("-wal", "-journal"):
            sib = Path(str(src_path) + suffix)
            if sib.exists():
                shutil.copyfile(sib, str(local) + suffix)
        src = sqlite3.connect(local, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            _copy(src, dst_path)
        finally:
            src.close()
        return "copied"
    except (sqlite3.Error, OSError) as e:
        dst_path.unlink(missing_ok=True)
        raise SnapshotError(f"{err}; copying the files did not help either: {e}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sibling_base(path: str) -> str | None:
    """``/x/app.db`` for ``/x/app.db-wal`` (and -shm, -journal), else None."""
    for s in SIBLINGS:
        if path.endswith(s):
            return path[: -len(s)]
    return None
