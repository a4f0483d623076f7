"""Swap: put staged trees into place, each in one atomic step.

Only after the whole archive verified and the staged data is durable (``syncfs``):
``renameat2(RENAME_EXCHANGE)`` swaps the staged tree and the destination, and the old tree is
deleted with the staging directory. An interrupted restore therefore leaves each path either wholly
old or wholly new. If the destination is a mount point (e.g. the whole data volume), its top-level
entries are swapped one by one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from pathlib import Path
from typing import Any

from .errors import BackupError
from .extract import STAGING_PREFIX, Target
from .fsutil import fsync_dir

RENAME_EXCHANGE = 2
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


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths. False if the kernel/file system cannot (caller falls back)."""
    fn = getattr(_c(), "renameat2", None)
    if fn is None:
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.EBUSY, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def clean_stale_staging(targets: list[Target]) -> None:
    """Remove staging dirs left by restores that died (the caller holds the run lock)."""
    for t in targets:
        parent = t.dest if t.mount else t.dest.parent
        if not parent.is_dir():
            continue
        for n in os.listdir(parent):
            if n.startswith(f"{STAGING_PREFIX}{t.name}-"):
                shutil.rmtree(parent / n, ignore_errors=True)


def swap_into_place(t: Target) -> None:
    staged = t.staged
    if not os.path.lexists(staged):
        return
    if not t.mount:
        if os.path.lexists(t.dest):
            if exchange(staged, t.dest):
                fsync_dir(t.dest.parent)
                return  # the old tree is now at `staged`; the caller removes the staging base
            # no RENAME_EXCHANGE here: two renames (a crash in between leaves the old tree in staging)
            old = t.base / (t.name + ".old")
            os.rename(t.dest, old)
        os.rename(staged, t.dest)
        fsync_dir(t.dest.parent)
        return
    # dest is a mount point: swap its children, then give it the archived directory's attributes
    if not staged.is_dir() or staged.is_symlink():
        raise BackupError(f"{t.dest} is a mount point but the archive holds a file for {t.name!r}")
    keep = set(os.listdir(staged))
    for n in os.listdir(t.dest):
        if n.startswith(STAGING_PREFIX) or n in keep:
            continue
        p = t.dest / n
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            os.unlink(p)
    for n in keep:
        src, dst = staged / n, t.dest / n
        if not (os.path.lexists(dst) and exchange(src, dst)):
            if os.path.lexists(dst):
                if dst.is_dir() and not dst.is_symlink():
                    shutil.rmtree(dst)
                else:
                    os.unlink(dst)
            os.rename(src, dst)
    st = os.lstat(staged)
    if os.geteuid() == 0:
        os.chown(t.dest, st.st_uid, st.st_gid)
    os.chmod(t.dest, st.st_mode & 0o777)
    os.utime(t.dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    fsync_dir(t.dest)
