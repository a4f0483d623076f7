"""Scan: which configured paths exist, and every entry under them, in a stable order.

Two walks, so that memory does not grow with the number of files: :func:`survey` counts (for the
archive's header, the pre-flight space check and the progress bar) and :func:`walk` yields the
entries one directory listing at a time while the writer archives them. Symlinks inside a path
are never followed; a configured path that is itself a symlink is followed once (it names what the
operator asked for) and recorded. Sockets, FIFOs and devices are skipped with a warning. The backup
directory, met inside a path, is left out (with one warning), so archives never hold archives.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from .config import PathSpec
from .errors import BackupError, Interrupted


@dataclass(slots=True)
class ScanEntry:
    arcname: str
    path: str
    st: os.stat_result


@dataclass
class Found:
    """What a walk met besides the entries themselves."""

    unreadable: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    excluded: int = 0
    left_out: dict[str, list[str]] = field(default_factory=dict)  # name -> the backup dir inside it
    excluded_in: set[str] = field(default_factory=set)  # names of the paths EXCLUDE took from
    files_in: dict[str, int] = field(default_factory=dict)  # name -> regular files yielded
    # names of configured paths that vanished, changed kind or were replaced while the walk was
    # at them: what the walk yielded of them is not all they hold (the writer: incomplete)
    vanished: list[str] = field(default_factory=list)


@dataclass
class Survey(Found):
    """The first pass: which configured paths exist, and how much there is to archive. It keeps
    counts, not the file list, so memory does not grow with the number of files."""

    tops: list[tuple[str, str, str]] = field(default_factory=list)  # (name, path, dir|file|link)
    # name -> (st_dev, st_ino) of each top when the run started: what :func:`walk` expects to meet
    ids: dict[str, tuple[int, int]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # "name=path"
    file_count: int = 0
    source_bytes: int = 0
    regular_files: int = 0
    followed: dict[str, str] = field(default_factory=dict)  # name -> what its configured link points at
    emptied: list[tuple[str, str, str]] = field(default_factory=list)  # (name, path, a file EXCLUDE took)

    @property
    def kinds(self) -> dict[str, str]:
        return {name: kind for name, _, kind in self.tops}


def _kind(mode: int) -> str | None:
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "link"
    return None


def survey(
    paths: tuple[PathSpec, ...],
    should_stop: Callable[[], bool] = lambda: False,
    excluded: Callable[[str, bool], bool] | None = None,
    backup_dir: str | os.PathLike[str] | None = None,
    visit: Callable[[ScanEntry], None] | None = None,
) -> Survey:
    """Find the configured paths that exist, then count what :func:`walk` will yield under them.
    Warnings about the paths themselves are kept; those met inside are left to the second walk.
    ``visit`` sees every entry (incremental.py finds hard-link groups with it).
    Raises BackupError when a path is (or leads into) the backup directory or is a link to ``/``."""
    result = find_tops(paths, backup_dir)
    found = Found()
    skip = backup_dir_ids(backup_dir)
    for e in walk(result.tops, found, should_stop, excluded, skip, result.ids):
        if visit is not None:
            visit(e)
        result.file_count += 1
        if stat.S_ISREG(e.st.st_mode):
            result.source_bytes += e.st.st_size
            result.regular_files += 1
    result.left_out = found.left_out
    # EXCLUDE patterns that took every file of a path that has some: a backup of empty dirs
    for name, path, kind in result.tops:
        if kind == "dir" and not found.files_in.get(name) and name in found.excluded_in:
            example = first_file(path, name, skip)
            if example is not None:
                result.emptied.append((name, path, example))
    return result


def find_tops(paths: tuple[PathSpec, ...], backup_dir: str | os.PathLike[str] | None = None) -> Survey:
    """Which configured paths exist, and what each is (no walk below them); a PATHS entry that is
    a symlink is followed as the backup follows it. Raises BackupError as :func:`survey` does."""
    result = Survey()
    bdir = os.path.realpath(backup_dir) if backup_dir is not None else None
    for spec in paths:
        path = str(spec.path)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            result.missing.append(f"{spec.name}={spec.path}")
            result.warnings.append(f"path {spec.name}={spec.path} does not exist; skipped")
            continue
        except PermissionError:
            result.unreadable.append(path)
            continue
        if stat.S_ISLNK(st.st_mode):
            followed = _follow(spec, result)
            if followed is None:
                continue
            path, st = followed
        kind = _kind(st.st_mode)
        if kind is None:
            result.warnings.append(f"{path} is not a file, directory or symlink; skipped")
            continue
        if bdir is not None:
            _not_the_backup_dir(spec, path, bdir)
        result.tops.append((spec.name, path, kind))
        result.ids[spec.name] = (st.st_dev, st.st_ino)
    return result


def _follow(spec: PathSpec, result: Survey) -> tuple[str, os.stat_result] | None:
    """A configured path that is a symlink: what it points at (recorded in ``result.followed``),
    or None when it points at nothing (missing) or cannot be followed (unreadable: a loop)."""
    try:
        target = os.path.realpath(spec.path, strict=True)
        st = os.lstat(target)
    except FileNotFoundError:
        result.missing.append(f"{spec.name}={spec.path}")
        result.warnings.append(
            f"path {spec.name}={spec.path} does not exist (a symlink to {_readlink(spec.path)!r}, "
            "which is missing); skipped"
        )
        return None
    except OSError as e:  # ELOOP, EACCES on the way
        result.unreadable.append(str(spec.path))
        result.warnings.append(
            f"path {spec.name}={spec.path} is a symlink that cannot be followed ({e.strerror}); "
            "nothing of it was saved"
        )
        return None
    if target == "/":
        raise BackupError(
            f"path {spec.name}={spec.path} is a symlink to '/': refusing to back up the whole system; "
            "point the link (or PATHS) at the data"
        )
    result.followed[spec.name] = target
    return target, st


def _readlink(p: os.PathLike[str] | str) -> str:
    try:
        return os.readlink(p)
    except OSError:
        return "?"


def _not_the_backup_dir(spec: PathSpec, path: str, bdir: str) -> None:
    """A path that is the backup directory, or lies inside its archives or scratch space, would
    archive the archives (config.py refuses the plain case before anything runs)."""
    real = os.path.realpath(path)
    if real == bdir or any(real == r or real.startswith(r + "/") for r in _reserved(bdir)):
        how = f" (a symlink to {real})" if real != str(spec.path) else ""
        raise BackupError(
            f"path {spec.name}={spec.path}{how} is the backup directory {bdir} or inside its archives: "
            "refusing to archive the backups; point PATHS at the data"
        )


def _reserved(bdir: str) -> list[str]:
    from .layout import TIERS

    return [os.path.join(bdir, t) for t in TIERS]


def backup_dir_ids(backup_dir: str | os.PathLike[str] | None) -> frozenset[tuple[int, int]]:
    """(st_dev, st_ino) of the backup directory: the walk leaves it out wherever it meets it
    (however it is reached: a subdirectory, a bind mount)."""
    if backup_dir is None:
        return frozenset()
    try:
        st = os.stat(backup_dir)
    except OSError:
        return frozenset()
    return frozenset({(st.st_dev, st.st_ino)})


def first_file(top: str, name: str, skip: frozenset[tuple[int, int]] = frozenset()) -> str | None:
    """The first regular file under ``top`` (no excludes), as an archive name; None if there is none."""
    for e in walk([(name, top, "dir")], Found(), skip_ids=skip):
        if stat.S_ISREG(e.st.st_mode):
            return e.arcname
    return None


def walk(
    tops: list[tuple[str, str, str]],
    found: Found,
    should_stop: Callable[[], bool] = lambda: False,
    excluded: Callable[[str, bool], bool] | None = None,
    skip_ids: frozenset[tuple[int, int]] = frozenset(),
    ids: Mapping[str, tuple[int, int]] | None = None,
) -> Iterator[ScanEntry]:
    """Yield every entry under ``tops`` (from :func:`survey`) without following symlinks, sorted
    by name within each directory (so archives are stable), one directory listing in memory at a
    time. A top that is gone, whose kind changed, or (``ids``: each top's (dev, ino) when the run
    started) that is another directory or volume than at the start is skipped, and a directory
    top that is gone or is another directory once its walk is done (moved away, unmounted) is
    noticed: all are in ``found.vanished``, since the archive's header already declared them.
    A file top is another file only on another device (an unmounted bind mount): a file replaced
    by rename on its own file system (an atomic rewrite) is archived as it is now.
    ``excluded(rel, is_dir)`` drops entries (and whole directories); directories whose (dev, ino)
    is in ``skip_ids`` (the backup dir) are left out with a warning."""
    for name, path, kind in tops:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            found.warnings.append(f"path {name}={path} vanished while archiving (moved away or unmounted?)")
            found.vanished.append(name)
            continue
        except PermissionError:
            found.unreadable.append(path)
            continue
        if _kind(st.st_mode) != kind:
            found.warnings.append(f"path {name}={path} is no longer a {kind}; skipped")
            found.vanished.append(name)
            continue
        if ids is not None and name in ids and _replaced(kind, ids[name], st):
            found.warnings.append(
                f"path {name}={path} was replaced (by another directory, or its volume was unmounted) "
                "after the backup started; nothing of it was saved"
            )
            found.vanished.append(name)
            continue
        yield ScanEntry(name, path, st)
        if kind == "file":
            found.files_in[name] = found.files_in.get(name, 0) + 1
        if kind == "dir":
            yield from _walk_dir(path, name, found, should_stop, excluded, skip_ids)
            if not _still(path, st):
                found.warnings.append(
                    f"path {name}={path} vanished or was replaced while it was archived (moved away or "
                    "unmounted?): the archive holds only part of it"
                )
                found.vanished.append(name)


def _replaced(kind: str, was: tuple[int, int], st: os.stat_result) -> bool:
    """Whether the top ``st`` is not the one whose (dev, ino) was ``was`` at the start."""
    if kind == "dir":
        return (st.st_dev, st.st_ino) != was
    return st.st_dev != was[0]


def _still(path: str, st: os.stat_result) -> bool:
    """Whether ``path`` is still the directory ``st`` describes (same device and inode)."""
    try:
        now = os.lstat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _walk_dir(
    top: str,
    arctop: str,
    found: Found,
    should_stop: Callable[[], bool],
    excluded: Callable[[str, bool], bool] | None,
    skip_ids: frozenset[tuple[int, int]],
) -> Iterator[ScanEntry]:
    cut = len(arctop) + 1
    stack = [(top, arctop)]
    while stack:
        if should_stop():
            raise Interrupted("interrupted while scanning")
        dirpath, arcdir = stack.pop()
        try:
            with os.scandir(dirpath) as it:
                items = sorted(it, key=lambda d: d.name)
        except PermissionError:
            found.unreadable.append(dirpath + "/")
            continue
        except FileNotFoundError:
            found.warnings.append(f"{dirpath} vanished while scanning; skipped")
            continue
        subdirs = []
        for d in items:
            try:
                st = d.stat(follow_symlinks=False)
            except FileNotFoundError:
                found.warnings.append(f"{d.path} vanished while scanning; skipped")
                continue
            arc = f"{arcdir}/{d.name}"
            kind = _kind(st.st_mode)
            if kind == "dir" and (st.st_dev, st.st_ino) in skip_ids:
                found.left_out.setdefault(arctop, []).append(arc[cut:])
                found.warnings.append(
                    f"the backup directory is inside path {arctop} (at {arc}): it is left out of the "
                    "archive, so archives never hold earlier archives; better keep it outside the data"
                )
                continue
            if excluded is not None and excluded(arc[cut:], kind == "dir"):
                found.excluded += 1
                found.excluded_in.add(arctop)
                continue
            if kind is None:
                found.warnings.append(f"{d.path} is a socket, FIFO or device; skipped")
                continue
            yield ScanEntry(arc, d.path, st)
            if kind == "file":
                found.files_in[arctop] = found.files_in.get(arctop, 0) + 1
            if kind == "dir":
                subdirs.append((d.path, arc))
        del items
        stack.extend(reversed(subdirs))
