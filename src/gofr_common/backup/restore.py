"""Restore: verify and extract in one pass into staging directories, then swap each path into place.

For each restored path ``D``:
  1. members of its name are extracted into ``D.parent/.gofr-restore-<name>-<pid>/<name>`` (the
     same file system as ``D``), while the archive is hashed and read to its end;
  2. only if the whole archive verified: ``renameat2(RENAME_EXCHANGE)`` swaps the staged tree and
     ``D`` in one atomic step, and the old tree is deleted. An interrupted restore therefore leaves
     each path either wholly old or wholly new (leftover staging dirs are removed next time).
If ``D`` is a mount point (e.g. the whole data volume), its top-level entries are swapped one by one.

Every member is checked like tarfile's ``data`` filter would (no absolute names, no ``..``, no
links that point outside, no device nodes or FIFOs, nothing written through a symlink) and must
belong to a selected name; owners are restored
when running as root; modes are restored without setuid/setgid/sticky bits.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .archive import read_meta
from .config import BackupConfig
from .errors import BackupError, ConfigError, VerifyError
from .fsutil import free_bytes, fsync_dir
from .verify import StopVerify, VerifyResult, read_member, verify_archive

STAGING_PREFIX = ".gofr-restore-"
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


@dataclass
class Target:
    name: str
    dest: Path
    mount: bool  # dest is a mount point: swap its children instead of itself
    base: Path = field(default_factory=Path)  # staging base; the staged tree is base/name

    @property
    def staged(self) -> Path:
        return self.base / self.name


@dataclass
class Change:
    created: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass
class RestorePlan:
    archive: Path
    targets: list[Target]
    changes: dict[str, Change]

    def summary(self, done: bool = False) -> list[str]:
        out = []
        for t in self.targets:
            c = self.changes[t.name]
            if done:
                out.append(
                    f"{t.name} -> {t.dest}: {len(c.created)} created, {len(c.replaced)} replaced, "
                    f"{len(c.removed)} not in the backup removed"
                )
            else:
                out.append(
                    f"{t.name} -> {t.dest}: {len(c.created)} to create, {len(c.replaced)} to replace, "
                    f"{len(c.removed)} not in the backup to remove"
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "archive": self.archive.name,
            "targets": [
                {
                    "name": t.name,
                    "dest": str(t.dest),
                    "created": self.changes[t.name].created,
                    "replaced": self.changes[t.name].replaced,
                    "removed": self.changes[t.name].removed,
                }
                for t in self.targets
            ],
        }


def resolve_targets(
    config: BackupConfig, meta: dict[str, Any], target_dir: Path | None, only: list[str] | None
) -> list[Target]:
    names = list(meta.get("paths") or {})
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(
                f"--only {','.join(unknown)}: not in this archive; it holds: {', '.join(names) or 'nothing'}"
            )
        names = [n for n in names if n in only]
    by_name = {p.name: p.path for p in config.paths}
    targets = []
    for n in names:
        if target_dir is not None:
            dest = target_dir / n
        elif n in by_name:
            dest = by_name[n]
        else:
            raise ConfigError(
                f"the archive holds {n!r}, which is not in {config.prefix}PATHS; "
                "restore it with --target DIR, or add it to PATHS"
            )
        targets.append(Target(n, dest, mount=is_mount(dest)))
    if os.environ.get("GOFR_BACKUP_IN_CONTAINER") == "1":
        for t in targets:
            if _mount_point(t.dest) == Path("/"):
                raise ConfigError(
                    f"{t.name} -> {t.dest} is not on a mounted volume in this container, so a restore "
                    "there would vanish with the container: mount its volume, or leave it out with --only"
                )
    # parents before children, so nested paths (e.g. data:. and embeddings:embeddings) end up right
    targets.sort(key=lambda t: len(t.dest.parts))
    return targets


def _mount_points() -> set[str] | None:
    """Every mount point, from /proc/self/mountinfo. os.path.ismount cannot see a bind mount from
    the same device (a Docker volume on the same disk as the container's root, for one)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return None

    def unescape(s: str) -> str:  # mountinfo escapes space, tab, newline and backslash as \ooo
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)

    return {unescape(line.split(" ")[4]) for line in lines if len(line.split(" ")) > 4}


def is_mount(p: Path) -> bool:
    mps = _mount_points()
    return str(p) in mps if mps is not None else os.path.ismount(p)


def _mount_point(p: Path) -> Path:
    """The mount point of the file system that holds ``p`` (or would, once created)."""
    p = Path(os.path.abspath(p))
    mps = _mount_points()
    while p != p.parent and not (str(p) in mps if mps is not None else os.path.ismount(p)):
        p = p.parent
    return p


def _rel_tree(root: Path, prefix: str, skip: str | None = None) -> dict[str, bool]:
    """{relative path: is_dir} for everything under root (not following symlinks)."""
    out: dict[str, bool] = {}
    if not os.path.lexists(root):
        return out
    if not root.is_dir() or root.is_symlink():
        out[prefix] = False
        return out
    out[prefix] = True
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        base = prefix if rel == "." else f"{prefix}/{rel}"
        if skip and rel == ".":
            dirnames[:] = [d for d in dirnames if not d.startswith(skip)]
        for d in dirnames:
            out[f"{base}/{d}"] = True
        for f in filenames:
            out[f"{base}/{f}"] = False
    return out


def diff(t: Target, archived: set[str], archived_dirs: set[str]) -> Change:
    on_disk = _rel_tree(t.dest, t.name, skip=STAGING_PREFIX)
    c = Change()
    for p in sorted(archived):
        if p not in on_disk:
            c.created.append(p)
        elif p not in archived_dirs or not on_disk[p]:
            c.replaced.append(p)
    c.removed = sorted(p for p in on_disk if p not in archived)
    return c


class Refused(Exception):
    """A member that would escape the target or is not plain data."""


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def check_member(member: tarfile.TarInfo, dest: str, selected: set[str]) -> tarfile.TarInfo:
    """The rules of tarfile's ``data`` filter (done here, so they hold on every Python 3.11):
    no absolute names, no ``..``, nothing written through a symlink, no links pointing outside,
    only files, directories, symlinks and hard links. Owners and permission bits are kept;
    setuid, setgid and sticky bits are dropped."""
    name = member.name
    parts = name.split("/")
    if name.startswith("/") or os.path.isabs(name):
        raise Refused(f"absolute path {name!r}")
    if ".." in parts:
        raise Refused(f"'..' in {name!r}")
    if parts[0] not in selected:
        raise Refused(f"member {name!r} is outside the selected paths")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise Refused(f"{name!r} is a device node, FIFO or other special file")
    root = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(root, name))  # follows links already extracted
    if not _inside(target, root):
        raise Refused(f"{name!r} would be written outside the target, to {target}")
    if member.issym() or member.islnk():
        if os.path.isabs(member.linkname):
            raise Refused(f"link {name!r} points to the absolute path {member.linkname!r}")
        base = os.path.join(root, os.path.dirname(name)) if member.issym() else root
        if not _inside(os.path.realpath(os.path.join(base, member.linkname)), root):
            raise Refused(f"link {name!r} -> {member.linkname!r} points outside the target")
    checked = copy.copy(member)  # (TarInfo.replace is 3.11.4+)
    if not member.issym():
        checked.mode = member.mode & 0o777
    return checked


class _Extractor:
    """Extracts selected members into their staging dirs while verify_archive reads the stream."""

    def __init__(self, targets: list[Target], declared: set[str]) -> None:
        self.by_name = {t.name: t for t in targets}
        self.declared = declared  # the names the archive's header lists
        self.selected = set(self.by_name)
        self.dirs: list[tuple[tarfile.TarInfo, str]] = []
        self.archived: dict[str, set[str]] = {t.name: set() for t in targets}
        self.archived_dirs: set[str] = set()
        self.seen: set[str] = set()
        self.links: set[str] = set()  # symlinks this restore created (never written through)
        self._fds: dict[str, int] = {}  # staged directory -> open descriptor (LRU)
        # free space per staging dir, counted down as members are written: a member claiming more
        # than the disk has is refused before anything of it is written (writes still get ENOSPC)
        self.room: dict[str, int] = {}
        self.root = os.geteuid() == 0  # owners are restored only as root

    def __call__(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        top = m.name.split("/", 1)[0]
        if top not in self.declared:
            raise StopVerify(f"member {m.name!r} does not belong to any path the archive declares")
        if top not in self.by_name:  # not selected (--only): read past it, hashing it, checking its size
            if m.isreg():
                read_member(tar, m)
            return
        name = m.name.rstrip("/")
        if name in self.seen or os.path.normpath(name) != name:
            raise StopVerify(f"member {m.name!r} is duplicated or not in normal form")
        self.seen.add(name)
        t = self.by_name[top]
        # the staging dir starts empty, so the only symlinks in it are the ones this restore made:
        # a member below one of them would be written through it
        parts = name.split("/")
        if self.links:
            for k in range(1, len(parts)):
                if "/".join(parts[:k]) in self.links:
                    raise StopVerify(
                        f"refusing member {m.name!r}: it would be written through the symlink "
                        f"{'/'.join(parts[:k])!r}"
                    )
        if m.issym() or m.islnk() or not (m.isreg() or m.isdir()):
            try:  # links and anything unusual: the full check, with realpath
                check_member(m, str(t.base), self.selected)
            except Refused as e:
                raise StopVerify(f"refusing member {m.name!r}: {e}") from None
        elif name.startswith("/") or ".." in parts:
            raise StopVerify(f"refusing member {m.name!r}: absolute or '..'")
        dest = f"{t.base}/{name}"
        try:
            if m.isdir():
                os.makedirs(dest, mode=0o700, exist_ok=True)
                self.dirs.append((m, dest))
            elif m.isreg():
                if m.size > 0:
                    room = self.room.get(t.name, 0)
                    if m.size > room:  # statvfs only when the estimate runs out
                        room = free_bytes(t.base)
                        if m.size > room:
                            raise StopVerify(
                                f"member {m.name!r} claims {m.size} bytes, more than the {room} free "
                                f"where it would be staged ({t.base.parent})"
                            )
                    self.room[t.name] = room - m.size
                parent, _, base = name.rpartition("/")
                fd = os.open(
                    base,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=self._dirfd(t, parent),
                )
                try:
                    read_member(tar, m, fd)
                    if self.root:
                        os.fchown(fd, m.uid, m.gid)
                    os.fchmod(fd, m.mode & 0o777)
                    os.utime(fd, (m.mtime, m.mtime))
                finally:
                    os.close(fd)
            elif m.issym():
                os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
                os.symlink(m.linkname, dest)
                if self.root:
                    os.lchown(dest, m.uid, m.gid)
                os.utime(dest, (m.mtime, m.mtime), follow_symlinks=False)
                self.links.add(name)
            elif m.islnk():
                target = m.linkname.rstrip("/")
                if target.split("/", 1)[0] != top or target not in self.seen or target in self.links:
                    raise StopVerify(
                        f"refusing member {m.name!r}: hard link to {m.linkname!r}, which is not "
                        "a file restored before it in the same path"
                    )
                os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
                os.link(f"{t.base}/{target}", dest, follow_symlinks=False)
        except OSError as e:
            raise StopVerify(f"cannot extract {m.name!r}: {e}") from None
        self.archived[top].add(name)
        if m.isdir():
            self.archived_dirs.add(name)

    def _dirfd(self, t: Target, rel: str) -> int:
        """A descriptor of the staged directory ``rel`` (created if needed), from a small LRU:
        opening relative to it is about twice as fast as by absolute path, and members arrive
        grouped by directory."""
        key = f"{t.name}\0{rel}"
        fd = self._fds.pop(key, None)
        if fd is None:
            d = t.base / rel
            os.makedirs(d, mode=0o700, exist_ok=True)
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            if len(self._fds) >= 32:
                os.close(self._fds.pop(next(iter(self._fds))))
        self._fds[key] = fd  # most recently used last
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def finish_dirs(self, tar: tarfile.TarFile) -> None:
        # deepest first, so setting a parent's mtime is the last thing that touches it
        for ti, path in sorted(self.dirs, key=lambda x: x[1].count("/"), reverse=True):
            if self.root:
                os.chown(path, ti.uid, ti.gid)
            os.chmod(path, ti.mode & 0o777)
            os.utime(path, (ti.mtime, ti.mtime))


def clean_stale_staging(targets: list[Target]) -> None:
    """Remove staging dirs left by restores that died (the caller holds the run lock)."""
    for t in targets:
        parent = t.dest if t.mount else t.dest.parent
        if not parent.is_dir():
            continue
        for n in os.listdir(parent):
            if n.startswith(f"{STAGING_PREFIX}{t.name}-"):
                shutil.rmtree(parent / n, ignore_errors=True)


def _read_meta_or_refuse(archive: Path) -> dict[str, Any]:
    try:
        return read_meta(archive)
    except BackupError as e:
        raise VerifyError(f"refusing to restore {archive.name}: {e}; nothing was changed") from None


def plan_restore(
    config: BackupConfig,
    archive: Path,
    target_dir: Path | None,
    only: list[str] | None,
    expected_sha256: str | None,
) -> tuple[RestorePlan, VerifyResult]:
    """For --dry-run: verify, and say what would change. Touches nothing."""
    meta = _read_meta_or_refuse(archive)
    targets = resolve_targets(config, meta, target_dir, only)
    res = verify_archive(archive, expected_sha256, collect_members=True)
    if not res.ok:
        raise VerifyError(f"refusing to restore {archive.name}: {res.error}")
    changes = {}
    for t in targets:
        names = {m.name.rstrip("/") for m in res.members if m.name.split("/", 1)[0] == t.name}
        dirs = {m.name.rstrip("/") for m in res.members if m.type == tarfile.DIRTYPE}
        changes[t.name] = diff(t, names, dirs)
    return RestorePlan(archive, targets, changes), res


def restore(
    config: BackupConfig,
    archive: Path,
    target_dir: Path | None = None,
    only: list[str] | None = None,
    expected_sha256: str | None = None,
    confirm: Callable[[RestorePlan], bool] = lambda p: True,
    should_stop: Callable[[], bool] = lambda: False,
) -> RestorePlan:
    meta = _read_meta_or_refuse(archive)
    targets = resolve_targets(config, meta, target_dir, only)
    clean_stale_staging(targets)
    pid = os.getpid()
    # a restore that is refused or cancelled must leave no trace, not even a parent's mtime
    parent_times: dict[Path, tuple[int, int]] = {}
    swapped = False
    try:
        for t in targets:
            parent = t.dest if t.mount else t.dest.parent
            parent.mkdir(parents=True, exist_ok=True)
            st = os.stat(parent)
            parent_times.setdefault(parent, (st.st_atime_ns, st.st_mtime_ns))
            t.base = parent / f"{STAGING_PREFIX}{t.name}-{pid}"
            t.base.mkdir(mode=0o700)
        ex = _Extractor(targets, set(meta.get("paths") or {}))
        holder: dict[str, tarfile.TarFile] = {}

        def visit(tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
            holder["tar"] = tar
            ex(tar, m)

        try:
            res = verify_archive(archive, expected_sha256, visit=visit, should_stop=should_stop)
        finally:
            ex.close()
        if not res.ok:
            raise VerifyError(f"refusing to restore {archive.name}: {res.error}; nothing was changed")
        if "tar" in holder:
            ex.finish_dirs(holder["tar"])
        changes = {t.name: diff(t, ex.archived[t.name], ex.archived_dirs) for t in targets}
        plan = RestorePlan(archive, targets, changes)
        if not confirm(plan):
            raise BackupError("restore cancelled; nothing was changed")
        sync_file_systems([t.base for t in targets])  # the staged data is durable before any swap
        swapped = True
        for t in targets:
            _swap_into_place(t)
        return plan
    finally:
        for t in targets:
            if t.base != Path() and t.base.exists():
                shutil.rmtree(t.base, ignore_errors=True)
        if not swapped:
            for parent, (atime, mtime) in parent_times.items():
                with contextlib.suppress(OSError):
                    os.utime(parent, ns=(atime, mtime))


def _swap_into_place(t: Target) -> None:
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
