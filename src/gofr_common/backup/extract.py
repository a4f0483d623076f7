"""Extract: verify and extract an archive in one pass into staging directories.

For each restored name, members are written below ``<parent>/.gofr-restore-<name>-<pid>/<name>``
(the same file system as the destination, so the swap is a rename) while verify_archive hashes the
archive and reads it to its end. Every member is checked the way tarfile's ``data`` filter would
(no absolute names, no ``..``, no links that point outside, no device nodes or FIFOs, nothing
written through a symlink) and must belong to a selected name. Files are opened with O_NOFOLLOW
relative to directory descriptors. Owners are restored when running as root; modes without
setuid/setgid/sticky bits.
"""

from __future__ import annotations

import copy
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from .fsutil import free_bytes
from .verify import StopVerify, read_member

STAGING_PREFIX = ".gofr-restore-"


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


class Extractor:
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
