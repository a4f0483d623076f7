"""Restore: choose an archive, verify and extract it into staging, then swap it into place.

Stages (one module each):
  1. choose: by name, ``--latest`` (the newest usable archive), or from the remote (offsite.fetched);
     a sealed ``.age`` archive is checked and decrypted to a temp file first (sealed.decrypted);
  2. extract.py: verify and extract in one pass into staging directories beside each destination;
  3. confirm: the caller sees the plan (created / replaced / removed) and may cancel;
  4. swap.py: make the staged data durable, then swap each path into place atomically.
A restore that is refused or cancelled changes nothing, not even a parent directory's mtime.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import layout, sealed
from .archive_format import read_meta
from .config import BackupConfig
from .errors import BackupError, ConfigError, VerifyError
from .extract import STAGING_PREFIX, Change, Extractor, Target, diff
from .fsutil import run_lock
from .manifest import Entry, Manifest, latest
from .swap import clean_stale_staging, swap_into_place, sync_file_systems
from .verify import VerifyResult, verify_archive


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
        ex = Extractor(targets, set(meta.get("paths") or {}))
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
            swap_into_place(t)
        return plan
    finally:
        for t in targets:
            if t.base != Path() and t.base.exists():
                shutil.rmtree(t.base, ignore_errors=True)
        if not swapped:
            for parent, (atime, mtime) in parent_times.items():
                with contextlib.suppress(OSError):
                    os.utime(parent, ns=(atime, mtime))


# -- the library's one entry point -------------------------------------------------------------------
@dataclass
class RestoreRequest:
    """What to restore and where. ``name``: an archive file name or path (see
    BackupLayout.find); ``latest``: the newest usable archive instead."""

    name: str | None = None
    latest: bool = False
    target: Path | None = None  # restore copies under target/<name> instead of the configured paths
    only: list[str] | None = None
    dry_run: bool = False
    from_remote: bool = False
    identity: Path | None = None  # age identity, for sealed archives


def run_restore(
    config: BackupConfig,
    req: RestoreRequest,
    confirm: Callable[[RestorePlan], bool] = lambda p: True,
    should_stop: Callable[[], bool] = lambda: False,
) -> RestorePlan:
    """Choose the archive (locally or on the remote), check and decrypt it if it is sealed, then
    plan (``dry_run``) or restore it under the project's run lock."""
    identity = req.identity or config.identity_file
    if req.target is not None and os.path.lexists(req.target) and not req.target.is_dir():
        raise ConfigError(
            f"--target {req.target} is not a directory: name a directory to restore copies into"
        )
    if req.from_remote:
        from .offsite import fetched, find_remote
        from .remote import remote_for

        remote = remote_for(config)
        if remote is None or config.remote is None:
            raise ConfigError(
                f"no off-site storage configured: set {config.prefix}REMOTE_URL (s3://bucket/prefix)"
            )
        rentries = remote.read_manifest()
        rentry = latest(rentries) if req.latest else find_remote(rentries, req.name or "")
        if rentry is None:
            if req.latest:
                raise BackupError(f"no off-site backups of {config.project} in {config.remote.url}")
            raise ConfigError(f"{req.name!r} is not in {config.remote.url} (see 'gofr-backup list --remote')")
        with fetched(remote, rentry, identity) as plain:
            return _restore_plain(config, plain, None, req, confirm, should_stop)
    lay = config.layout
    entries = Manifest(lay.root).load(config.project)
    if req.latest:
        chosen = latest(entries, usable=lambda e: lay.archive(e["path"]).is_file())
        if chosen is None:
            raise BackupError(f"no usable backup of {config.project} in {config.backup_dir}")
        archive = lay.archive(chosen["path"])
    else:
        archive = lay.find(req.name or "")
    entry = next((e for e in entries if lay.archive(e["path"]) == archive), None) or Entry()
    if layout.is_sealed(archive.name):
        _, err = sealed.checksum_error(archive, entry.get("sha256"))
        if err:
            raise BackupError(f"refusing to restore {archive.name}: {err}; nothing was changed")
        with open(archive, "rb") as f, sealed.decrypted(f, archive.name, identity) as plain:
            return _restore_plain(config, plain, entry.get("plain_sha256"), req, confirm, should_stop)
    return _restore_plain(config, archive, entry.get("sha256"), req, confirm, should_stop)


def _restore_plain(
    config: BackupConfig,
    archive: Path,
    sha: str | None,
    req: RestoreRequest,
    confirm: Callable[[RestorePlan], bool],
    should_stop: Callable[[], bool],
) -> RestorePlan:
    if req.dry_run:
        return plan_restore(config, archive, req.target, req.only, sha)[0]
    # the backup volume may be mounted read-only for a restore
    with run_lock(config.layout, config.lock_timeout, should_stop, readonly_ok=True):
        return restore(config, archive, req.target, req.only, sha, confirm=confirm, should_stop=should_stop)
