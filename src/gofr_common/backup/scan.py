"""Scan: which configured paths exist, and every entry under them, in a stable order.

Two walks, so that memory does not grow with the number of files: :func:`survey` counts (for the
archive's header, the pre-flight space check and the progress bar) and :func:`walk` yields the
entries one directory listing at a time while the writer archives them. Symlinks are never
followed; sockets, FIFOs and devices are skipped with a warning.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .config import PathSpec
from .errors import Interrupted


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


@dataclass
class Survey(Found):
    """The first pass: which configured paths exist, and how much there is to archive. It keeps
    counts, not the file list, so memory does not grow with the number of files."""

    tops: list[tuple[str, str, str]] = field(default_factory=list)  # (name, path, dir|file|link)
    missing: list[str] = field(default_factory=list)  # "name=path"
    file_count: int = 0
    source_bytes: int = 0

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
) -> Survey:
    """Find the configured paths that exist, then count what :func:`walk` will yield under them.
    Warnings about the paths themselves are kept; those met inside are left to the second walk."""
    result = find_tops(paths)
    for e in walk(result.tops, Found(), should_stop, excluded):
        result.file_count += 1
        if stat.S_ISREG(e.st.st_mode):
            result.source_bytes += e.st.st_size
    return result


def find_tops(paths: tuple[PathSpec, ...]) -> Survey:
    """Which configured paths exist, and what each is (no walk below them)."""
    result = Survey()
    for spec in paths:
        try:
            st = os.lstat(spec.path)
        except FileNotFoundError:
            result.missing.append(f"{spec.name}={spec.path}")
            result.warnings.append(f"path {spec.name}={spec.path} does not exist; skipped")
            continue
        except PermissionError:
            result.unreadable.append(str(spec.path))
            continue
        kind = _kind(st.st_mode)
        if kind is None:
            result.warnings.append(f"{spec.path} is not a file, directory or symlink; skipped")
            continue
        result.tops.append((spec.name, str(spec.path), kind))
    return result


def walk(
    tops: list[tuple[str, str, str]],
    found: Found,
    should_stop: Callable[[], bool] = lambda: False,
    excluded: Callable[[str, bool], bool] | None = None,
) -> Iterator[ScanEntry]:
    """Yield every entry under ``tops`` (from :func:`survey`) without following symlinks, sorted
    by name within each directory (so archives are stable), one directory listing in memory at a
    time. A top whose kind changed since the survey is skipped: the archive's header already
    declared it. ``excluded(rel, is_dir)`` drops entries (and whole directories)."""
    for name, path, kind in tops:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            found.warnings.append(f"path {name}={path} vanished while archiving; skipped")
            continue
        except PermissionError:
            found.unreadable.append(path)
            continue
        if _kind(st.st_mode) != kind:
            found.warnings.append(f"path {name}={path} is no longer a {kind}; skipped")
            continue
        yield ScanEntry(name, path, st)
        if kind == "dir":
            yield from _walk_dir(path, name, found, should_stop, excluded)


def _walk_dir(
    top: str,
    arctop: str,
    found: Found,
    should_stop: Callable[[], bool],
    excluded: Callable[[str, bool], bool] | None,
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
            if excluded is not None and excluded(arc[cut:], kind == "dir"):
                found.excluded += 1
                continue
            if kind is None:
                found.warnings.append(f"{d.path} is a socket, FIFO or device; skipped")
                continue
            yield ScanEntry(arc, d.path, st)
            if kind == "dir":
                subdirs.append((d.path, arc))
        del items
        stack.extend(reversed(subdirs))
