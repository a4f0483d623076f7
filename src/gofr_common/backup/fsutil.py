"""File-system helpers: atomic writes, fsync, and the one fcntl lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BackupError, LockTimeout

if TYPE_CHECKING:
    from .layout import BackupLayout

FILE_MODE = 0o666  # the umask (UMASK, default 0027) makes it 0640


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_dir_nofollow(root: Path, rel: str, create: bool = False) -> int:
    """A descriptor of the directory ``root/rel``, reached one component at a time with
    O_NOFOLLOW: a symlink anywhere below ``root`` raises OSError (ELOOP or ENOTDIR) instead of
    being followed. ``create`` makes missing directories (mode 0700) on the way."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in rel.split("/"):
            if not part:
                continue
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=fd)
            nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def atomic_write_bytes(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def json_text(obj: Any, **kw: Any) -> str:
    """``json.dumps`` keeping non-ASCII text readable (``ensure_ascii=False``) unless the object
    holds a name that is not valid UTF-8 (a lone surrogate from ``surrogateescape``), which can
    only be written escaped (``\\udcff``): the text is then valid JSON that encodes as UTF-8, and
    reads back as the same str."""
    text = json.dumps(obj, ensure_ascii=False, **kw)
    try:
        text.encode()
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True, **kw)
    return text


def atomic_write_json(path: Path, obj: Any, mode: int = FILE_MODE) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode(), mode)


@contextlib.contextmanager
def file_lock(
    path: Path,
    timeout: float,
    what: str,
    on_wait: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    readonly_ok: bool = False,
) -> Iterator[None]:
    """Hold an exclusive fcntl lock on ``path``.

    The kernel drops the lock when the holding process dies, so it can never go stale; the lock
    file itself is left in place on purpose (deleting it would race with other lockers).
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        if readonly_ok and e.errno == errno.ENOENT:  # no backup dir at all (restore --from-remote)
            yield
            return
        if not readonly_ok or e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise BackupError(f"cannot open lock file {path}: {e.strerror}") from None
        try:  # a read-only backup volume (restore): flock works on a read-only descriptor
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            yield  # nothing on this read-only volume was ever locked: nobody else can write here
            return
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if not waited and on_wait is not None:
                on_wait()
            waited = True
            if should_stop is not None and should_stop():
                from .errors import Interrupted

                raise Interrupted(f"interrupted while waiting for {what}")
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"another gofr-backup process has held {what} for more than {timeout:g}s "
                    f"(lock file {path}); try again later or raise LOCK_TIMEOUT"
                )
            time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def lock_is_held(path: Path) -> bool:
    """Whether a live process holds the fcntl lock ``path`` (changes nothing on disk: a missing lock
    file is a lock nobody holds)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        return e.errno in (errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)  # releases the lock if this call took it
    return False


def remove_tree(path: Path) -> None:
    """Remove ``path`` and everything below it, also directories whose modes forbid it (a restored
    copy keeps the archive's modes, 0500 directories included); missing is fine."""
    if not os.path.lexists(path):
        return
    if not path.is_dir() or path.is_symlink():
        os.unlink(path)
        return
    try:
        shutil.rmtree(path)
        return
    except OSError:
        pass
    stack = [str(path)]  # make every directory ours to empty, top down, then once more
    while stack:
        d = stack.pop()
        try:
            os.chmod(d, 0o700)
            with os.scandir(d) as it:
                stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    shutil.rmtree(path)


def ensure_writable_dir(path: Path, what: str = "backup directory") -> None:
    """Create ``path`` if needed and make sure this process can write there, or say what to fix."""
    who = f"uid:gid {os.geteuid()}:{os.getegid()}"
    try:
        path.mkdir(mode=0o777, parents=True, exist_ok=True)
    except OSError as e:
        raise BackupError(f"cannot create the {what} {path}: {e.strerror} ({who})") from None
    probe = path / f".gofr-write-probe.{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as e:
        raise BackupError(
            f"the {what} {path} is not writable ({e.strerror}) by {who}: mount it read-write "
            "and make it writable by that user"
        ) from None


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (or would, once it is created)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class NotOurs(Exception):
    """A file that must not be deleted: not a regular file, or reached through a symlink."""


def tier_dir_fd(root: Path, tier: str) -> int | None:
    """An fd of ``root/tier``, opened without following a symlink there (the configured backup dir
    itself may be one: that is the operator's choice); None when it does not exist. Raises NotOurs
    when it is a symlink or not a directory. The caller closes the fd."""
    try:
        rfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return os.open(tier, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=rfd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise NotOurs(f"{tier}/ is a symlink or not a directory: nothing in it is touched") from None
        raise
    finally:
        os.close(rfd)


def regular_in(dir_fd: int, name: str) -> os.stat_result | None:
    """The stat of ``name`` in the directory, not following a symlink; None when it does not
    exist. Raises NotOurs when it is not a regular file."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise NotOurs(f"{name} is not a regular file (a symlink?): not deleted")
    return st


def unlink_regular(dir_fd: int, name: str) -> bool:
    """Delete ``name`` from the directory if it is a regular file (never through a symlink: the
    directory is an fd, and unlink removes a link itself, never its target). False: not there."""
    if regular_in(dir_fd, name) is None:
        return False
    try:
        os.unlink(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return False


def remove_quietly(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def run_lock(
    lay: BackupLayout,
    timeout: float,
    should_stop: Callable[[], bool] | None = None,
    readonly_ok: bool = False,
) -> contextlib.AbstractContextManager[None]:
    """The project's run lock: one backup, prune, sync or restore of a project at a time.
    ``readonly_ok``: a read-only backup volume is fine (restore mounts it so)."""
    from .log import event

    if not readonly_ok:
        ensure_writable_dir(lay.root)
    return file_lock(
        lay.run_lock,
        timeout,
        f"the {lay.project} backup lock",
        on_wait=lambda: event(
            "lock.wait", "another gofr-backup run holds the lock; waiting", lock=str(lay.run_lock)
        ),
        should_stop=should_stop,
        readonly_ok=readonly_ok,
    )


DirId = tuple[int, int]


def dir_id(path: str | os.PathLike[str]) -> DirId | None:
    """The identity (st_dev, st_ino) of a directory (links followed), or None (not a directory,
    missing, unreadable). The same directory seen through a bind mount has the same identity, where
    realpath() gives another name."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def lineage(path: str | os.PathLike[str]) -> list[tuple[Path, DirId]]:
    """``path`` (resolved) and each of its ancestors that is a directory, nearest first, with their
    identities: what a path lies inside, whatever name (bind mount) it is reached by."""
    real = Path(os.path.realpath(path))
    out = []
    for p in (real, *real.parents):
        ident = dir_id(p)
        if ident is not None:
            out.append((p, ident))
    return out
