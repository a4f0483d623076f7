"""Swap: put the staged trees into place under a journal, so that a restore is all or nothing.

Each target is staged in ``<parent>/.gofr-restore-<name>-<pid>/`` (``parent``: the directory that
holds the destination, or the destination itself when it is a mount point):

  <name>/       the staged tree (the new data); after an exchange, the old data
  old/          old entries moved aside (removed names of a mount point; the fallback below)
  journal-at    the path of the restore's journal; flock'ed while the restore runs
  journal.json  in the first target's base only: the commit record of the whole restore

Protocol: stage and verify everything; ``syncfs`` the staged data; write the journal atomically
(temp file, fsync, rename, fsync of the directory). That is the commit point. Then every step goes
forward: each path (each top-level entry of a mount point) is swapped with
``renameat2(RENAME_EXCHANGE)`` (or, where the file system cannot, two renames: the old entry
aside into ``old/``, the new one in), removed names of a mount point are moved aside (never
deleted before the end), and live paths that an incomplete archive never saved are moved back
into the new tree. Only then are the old trees, the bases and last the journal deleted.

Whether a step was done is read from the file system, not from the journal: the journal records
the inode numbers of the staged entries, of the live entries they replace and of the kept paths,
so :func:`roll_forward` can be run again after a kill at any point and only does what is left.
:func:`recover` finds the bases of restores that died: with a journal it rolls forward (the
result is wholly new), without one it deletes the staging (nothing had been swapped in: wholly
old). A base whose ``journal-at`` lock is held belongs to a running restore and is left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import BackupError
from .extract import STAGING_PREFIX, Target
from .fsutil import atomic_write_json, fsync_dir, open_dir_nofollow

RENAME_EXCHANGE = 2
AT_FDCWD = -100
JOURNAL = "journal.json"
POINTER = "journal-at"
# tests only: behave as on a file system without RENAME_EXCHANGE, to exercise the fallback for real
NO_EXCHANGE_ENV = "GOFR_BACKUP_TEST_NO_EXCHANGE"
_libc: Any = None


def _c() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def sync_file_systems(paths: list[Path]) -> None:
    """Make everything written under ``paths`` durable: syncfs(2) on each one's file system (not
    os.sync(), which would also wait for every other file system's dirty data)."""
    fn = getattr(_c(), "syncfs", None)
    if fn is None:
        os.sync()
        return
    for p in paths:
        fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if fn(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), str(p))
        finally:
            os.close(fd)


def exchange(a: Path | str, b: Path | str, fd_a: int = AT_FDCWD, fd_b: int = AT_FDCWD) -> bool:
    """Atomically swap two paths (relative to the directory descriptors, if given). False if the
    kernel or file system cannot (the caller falls back)."""
    fn = getattr(_c(), "renameat2", None)
    if fn is None or os.environ.get(NO_EXCHANGE_ENV) == "1":
        return False
    if fn(fd_a, os.fsencode(a), fd_b, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _ino(p: Path | str, dir_fd: int | None = None) -> int | None:
    try:
        return os.lstat(p, dir_fd=dir_fd).st_ino
    except (FileNotFoundError, NotADirectoryError):
        return None


def _rel(t: Target, name: str) -> str:
    """Archive name -> path relative to the target's root."""
    return "" if name == t.name else name[len(t.name) + 1 :]


# -- staging --------------------------------------------------------------------------------------
class Staging:
    """The staging bases of one restore, each holding a locked ``journal-at`` that names the
    journal (in the first base)."""

    def __init__(self, targets: list[Target]) -> None:
        self.targets = targets
        self.fds: list[int] = []
        self.journal = Path()

    def create(self) -> None:
        pid = os.getpid()
        for t in self.targets:
            t.base = t.parent / f"{STAGING_PREFIX}{t.name}-{pid}"
            t.base.mkdir(mode=0o700)
            if not self.fds:
                self.journal = t.base / JOURNAL
            fd = os.open(t.base / POINTER, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            self.fds.append(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, os.fsencode(str(self.journal)))

    def remove(self) -> None:
        """Before the commit: the staging holds copies only."""
        for t in self.targets:
            if t.base != Path() and t.base.exists():
                shutil.rmtree(t.base, ignore_errors=True)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()


# -- the journal ------------------------------------------------------------------------------------
def _record(t: Target) -> dict[str, Any]:
    """What roll_forward needs for one target, from the staging and the live data as they are
    just before the commit."""
    keep: list[dict[str, Any]] = []
    for name in t.keep:
        rel = _rel(t, name)
        if rel == "":
            return {"name": t.name, "dest": str(t.dest), "base": str(t.base), "entries": [], "keep": []}
        parent, _, leaf = rel.rpartition("/")
        try:  # the live parents must be real directories, or the path is not inside the target now
            fd = open_dir_nofollow(t.dest, parent)
        except OSError:
            continue
        try:
            ino = _ino(leaf, fd)
        finally:
            os.close(fd)
        if ino is not None:
            keep.append({"rel": rel, "ino": ino})
    rec: dict[str, Any] = {"name": t.name, "dest": str(t.dest), "base": str(t.base), "keep": keep}
    if t.merged:  # its staged tree went into a parent target's
        rec["entries"] = []
    elif not t.mount:
        rec["entries"] = [{"rel": "", "new": _ino(t.staged), "old": _ino(t.dest)}]
    else:
        staged = set(os.listdir(t.staged))
        live = {n for n in os.listdir(t.dest) if not n.startswith(STAGING_PREFIX)}
        skip = set(t.skip) | {k["rel"] for k in keep if "/" not in k["rel"]}
        rec["entries"] = [
            {"rel": n, "new": _ino(t.staged / n), "old": _ino(t.dest / n)}
            for n in sorted((staged | live) - skip)
        ]
        st = os.lstat(t.staged)
        rec["attrs"] = {
            "mode": stat.S_IMODE(st.st_mode),  # as staged: restored_mode already applied
            "uid": st.st_uid,
            "gid": st.st_gid,
            "atime_ns": st.st_atime_ns,
            "mtime_ns": st.st_mtime_ns,
        }
    return rec


def commit(staging: Staging, archive: str) -> Path:
    """The commit point: from here on the restore goes forward (now, or in :func:`recover`)."""
    targets = staging.targets
    sync_file_systems([t.base for t in targets])  # the staged data is durable before any swap
    doc = {"format": 1, "archive": archive, "targets": [_record(t) for t in targets]}
    atomic_write_json(staging.journal, doc, mode=0o600)
    return staging.journal


def _aside(base: Path, rel: str) -> Path:
    p = base / "old" / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(p):
        raise BackupError(f"cannot finish the restore: {p} is in the way; nothing more was changed")
    return p


def _forward_entry(rec: dict[str, Any], e: dict[str, Any]) -> None:
    dest, base, name = Path(rec["dest"]), Path(rec["base"]), rec["name"]
    rel = e["rel"]
    live = dest / rel if rel else dest
    staged = base / name / rel if rel else base / name
    if e["new"] is not None:
        if _ino(live) == e["new"]:
            return  # done
        if _ino(staged) != e["new"]:
            raise BackupError(
                f"cannot finish the restore of {live}: its restored copy is neither in place nor in "
                f"{staged}; nothing more was changed"
            )
        if os.path.lexists(live):
            if exchange(staged, live):  # the old entry is now at `staged`
                fsync_dir(live.parent)
                return
            os.rename(live, _aside(base, rel or name))  # no RENAME_EXCHANGE: two renames
            fsync_dir(base / "old")
        os.rename(staged, live)
    elif e["old"] is not None and _ino(live) == e["old"]:  # not in the archive: aside, not deleted
        os.rename(live, _aside(base, rel))
    else:
        return
    fsync_dir(live.parent)


def _forward_keep(rec: dict[str, Any], k: dict[str, Any]) -> None:
    """Move a path the incomplete archive never saved from the old tree back into the new one."""
    dest, base, name = Path(rec["dest"]), Path(rec["base"]), rec["name"]
    rel = k["rel"]
    parent, _, leaf = rel.rpartition("/")
    dfd = open_dir_nofollow(dest, parent, create=True)
    try:
        if _ino(leaf, dfd) == k["ino"]:
            return  # in place
        olds = [f"{name}/{rel}", f"old/{rel}", f"old/{name}/{rel}"]  # after an exchange, or a fallback
        for cand in olds:
            cparent, _, cleaf = cand.rpartition("/")
            try:
                sfd = open_dir_nofollow(base, cparent)
            except OSError:
                continue
            try:
                if _ino(cleaf, sfd) != k["ino"]:
                    continue
                if _ino(leaf, dfd) is None:
                    os.rename(cleaf, leaf, src_dir_fd=sfd, dst_dir_fd=dfd)
                elif not exchange(cleaf, leaf, sfd, dfd):
                    n = 0
                    while os.path.lexists(base / f"displaced-{n}"):
                        n += 1
                    os.rename(leaf, base / f"displaced-{n}", src_dir_fd=dfd)
                    os.rename(cleaf, leaf, src_dir_fd=sfd, dst_dir_fd=dfd)
                os.fsync(dfd)
                return
            finally:
                os.close(sfd)
        raise BackupError(
            f"cannot finish the restore: {dest / rel}, kept from the live data, is neither in place "
            "nor in the staging; nothing more was changed"
        )
    finally:
        os.close(dfd)


def load_journal(journal: Path) -> list[dict[str, Any]]:
    """The journal's records, each confined to its destination and its own staging base (a
    journal is only ever followed where this restore could have written it)."""
    if journal.name != JOURNAL or not journal.parent.name.startswith(STAGING_PREFIX):
        raise BackupError(f"{journal} is not a restore journal; nothing was changed")
    try:
        recs: list[dict[str, Any]] = json.loads(journal.read_text(encoding="utf-8"))["targets"]
        for rec in recs:
            dest, base = Path(rec["dest"]), Path(rec["base"])
            ok = (
                dest.is_absolute()
                and base.parent in (dest, dest.parent)
                and base.name.startswith(f"{STAGING_PREFIX}{rec['name']}-")
                and "/" not in rec["name"]
                and all(".." not in Path(x["rel"]).parts for x in rec["entries"] + rec["keep"])
            )
            if not ok:
                raise ValueError(f"record {rec.get('name')!r} reaches outside its path")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BackupError(f"cannot use the restore journal {journal}: {e}; nothing was changed") from None
    return recs


def roll_forward(journal: Path) -> list[str]:
    """Do whatever is left of a committed restore, then delete its staging and the journal.
    Returns the names of its targets."""
    recs = load_journal(journal)
    for rec in recs:
        for e in rec["entries"]:
            _forward_entry(rec, e)
        for k in rec["keep"]:
            _forward_keep(rec, k)
        a = rec.get("attrs")
        if a:  # a mount point: its own attributes come from the archive's directory
            dest = Path(rec["dest"])
            if os.geteuid() == 0:
                os.lchown(dest, a["uid"], a["gid"])
            os.chmod(dest, a["mode"] & 0o3777)  # a directory: setgid and sticky, never setuid
            os.utime(dest, ns=(a["atime_ns"], a["mtime_ns"]))
            fsync_dir(dest)
    # everything is in place: the old trees go, the journal's own base last
    for rec in sorted(recs, key=lambda r: Path(r["base"]) == journal.parent):
        base = Path(rec["base"])
        if base == journal.parent:
            journal.unlink()
            fsync_dir(base)
        shutil.rmtree(base, ignore_errors=True)
    for rec in recs:  # removing a staging base inside a mount point touched its mtime: set it again
        a = rec.get("attrs")
        if a:
            with contextlib.suppress(OSError):
                os.utime(rec["dest"], ns=(a["atime_ns"], a["mtime_ns"]))
    return [r["name"] for r in recs]


# -- a restore that died ---------------------------------------------------------------------------
def _pending(base: Path) -> tuple[int, Path | None] | None:
    """(locked descriptor of the base's journal-at, its journal if committed), or None when a
    running restore owns the base. Raises BackupError for a base it cannot judge."""
    try:
        fd = os.open(base / POINTER, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        left = [p.name for p in base.iterdir()]
        if any(n.endswith(".old") for n in left):  # an older version's two-rename swap
            raise BackupError(
                f"{base} was left by an interrupted restore of an older version and may hold the only "
                f"copy of {base.name}: move its *.old back into place by hand, then delete {base}"
            ) from None
        fd = -1
    if fd >= 0:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        raw = os.read(fd, 65536)
        journal = Path(os.fsdecode(raw)) if raw else None
        return fd, journal if journal is not None and journal.is_file() else None
    return fd, None


def staging_dirs(parents: Iterable[Path]) -> list[Path]:
    out = []
    for parent in dict.fromkeys(parents):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for n in sorted(names):
            p = parent / n
            if n.startswith(STAGING_PREFIX) and p.is_dir() and not p.is_symlink():
                out.append(p)
    return out


def pending_journals(parents: Iterable[Path]) -> list[Path]:
    """Journals of committed restores that died, found from their staging in ``parents``."""
    out: list[Path] = []
    for base in staging_dirs(parents):
        p = _pending(base)
        if p is not None:
            if p[0] >= 0:
                os.close(p[0])
            if p[1] is not None and p[1] not in out:
                load_journal(p[1])  # one that a recovery would refuse is refused here too
                out.append(p[1])
    return out


def recover(parents: Iterable[Path]) -> list[str]:
    """Finish or undo the restores that died, whose staging is in ``parents``. Returns what was
    done, one line each (the caller holds the run lock)."""
    done: list[str] = []
    for base in staging_dirs(parents):
        if not base.exists():  # removed by the roll-forward of another base's journal
            continue
        p = _pending(base)
        if p is None:
            continue
        fd, journal = p
        try:
            if not os.access(base.parent, os.W_OK):
                raise BackupError(
                    f"a restore that died left {base}, and {base.parent} is not writable here: run the "
                    "restore again where it can write (e.g. scripts/backup/restore_backup.sh) to finish it"
                )
            if journal is not None:
                names = roll_forward(journal)
                done.append(
                    f"finished a restore that was interrupted after its commit ({', '.join(names)}): "
                    "those paths now hold the archive's data"
                )
            else:
                shutil.rmtree(base, ignore_errors=True)
                done.append(f"removed {base}, left by a restore that died before it changed anything")
        finally:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
    return done
