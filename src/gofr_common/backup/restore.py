"""Restore: choose an archive, verify and extract it into staging, then swap it into place.

Stages (one module each):
  1. choose: by name, ``--latest`` (the newest archive that is complete and verified), or from
     the remote (offsite.fetched); a sealed ``.age`` archive is checked and decrypted first;
  2. recover (swap.py): finish a restore that died after its commit, or remove the staging of one
     that died before it;
  3. extract.py: verify and extract in one pass into staging directories beside each destination
     (a dry run makes the same pass and the same checks, and writes nothing);
  4. the whole: an incomplete archive needs ``allow_incomplete`` and never removes what it did
     not save; a path restored inside another (``data:.`` and ``storage:storage``) and every kept
     path must not be reached through a symlink or a file of the archive; no mount point may lie
     inside a restored path unless it is one of them;
  5. confirm: the caller sees the plan (created / replaced / removed / kept) and may cancel;
  6. swap.py: commit a journal, then swap everything into place (all or nothing, even if killed).
A restore that is refused or cancelled changes nothing, not even a parent directory's mtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import chain, layout, sealed
from .archive_format import header_problem, read_meta
from .config import BackupConfig
from .errors import BackupError, ConfigError, CouldNotCheck, Interrupted, LocalFault, VerifyError
from .extract import STAGING_PREFIX, Change, Extractor, Refused, Rewind, Superseded, Target
from .fsutil import DirId, dir_id, lineage, open_dir_nofollow, run_lock
from .manifest import Entry, Manifest, created_of, drill_failed, latest, unknown_completeness, unknown_hint
from .swap import Staging, commit, pending_journals, recover, roll_forward
from .verify import Capture, VerifyResult, capturing, restart_capture, verify_archive


@dataclass
class RestorePlan:
    archive: Path
    targets: list[Target]
    changes: dict[str, Change]
    incomplete: bool = False  # the archive could not read everything: c.kept are left as they are
    notes: list[str] = field(default_factory=list)  # what the operator should know (checksum used, ...)
    # newer archives --latest passed over: {"filename", "reason"} (also in ``notes``)
    passed_over: list[dict[str, str]] = field(default_factory=list)
    # an incremental's chain, full first: {"filename", "kind", "created", "size_bytes"} (empty: one archive)
    chain: list[dict[str, Any]] = field(default_factory=list)
    # what the restore put in place (the chain's final tree): archive name -> d, f, h (hard link), l
    # (symlink); for a drill's checks of a chain, whose last archive alone holds only what changed
    tree: dict[str, str] = field(default_factory=dict)

    def summary(self, done: bool = False) -> list[str]:
        out = []
        for t in self.targets:
            c = self.changes[t.name]
            if done:
                line = (
                    f"{t.name} -> {t.dest}: {len(c.created)} created, {len(c.replaced)} replaced, "
                    f"{len(c.removed)} not in the backup removed"
                )
            else:
                line = (
                    f"{t.name} -> {t.dest}: {len(c.created)} to create, {len(c.replaced)} to replace, "
                    f"{len(c.removed)} not in the backup to remove"
                )
            if c.kept:
                line += f", {len(c.kept)} never saved {'kept' if done else 'to keep'} as they are"
            out.append(line)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "archive": self.archive.name,
            "incomplete": self.incomplete,
            "notes": self.notes,
            "passed_over": self.passed_over,
            "chain": self.chain,
            "targets": [
                {
                    "name": t.name,
                    "dest": str(t.dest),
                    "created": self.changes[t.name].created,
                    "replaced": self.changes[t.name].replaced,
                    "removed": self.changes[t.name].removed,
                    "kept": self.changes[t.name].kept,
                    "unchanged": self.changes[t.name].unchanged,
                    "links_leading_outside": self.changes[t.name].outside,
                }
                for t in self.targets
            ],
        }


def _show(items: list[str], limit: int = 10) -> str:
    """A list for a one-line message: odd characters escaped, long lists cut."""
    shown = [repr(p) if any(c in p for c in "\n\r\t") else p for p in items[:limit]]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(shown) + more


def _existing_ancestor(p: Path) -> Path:
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _no_link_on_the_way(root: Path, name: str, dest: Path) -> None:
    """A configured path below the data dir must still be reached through real directories: if
    one of them is a symlink now, the restore would write wherever it points."""
    try:
        rel = dest.parent.relative_to(root)
    except ValueError:
        return
    p = root
    for part in rel.parts:
        p = p / part
        if p.is_symlink():
            raise ConfigError(
                f"{name} -> {dest}: {p} is a symlink now (to {os.readlink(p)}), so a restore would write "
                "through it; put the directory back, or restore with --target DIR"
            )


def _through_followed_link(name: str, dest: Path, followed: Any) -> Path:
    """A configured path that is a symlink was followed by the backup (``followed`` in the archive's
    header): restore into what it points at, and keep the link, but only while it still points
    where the backup followed it. Anywhere else, a restore would write wherever it points now."""
    if not dest.is_symlink():
        return dest  # the link is gone (or never was): the path itself is restored
    now = os.path.realpath(dest)
    if not isinstance(followed, str) or now != followed:
        raise ConfigError(
            f"{name} -> {dest} is a symlink to {now} now, but the backup "
            + (f"followed it to {followed}" if isinstance(followed, str) else "saved it as a link")
            + ": put the link back, or restore with --target DIR"
        )
    return Path(now)


def _protected(config: BackupConfig, t: Target, scratch: bool = False) -> list[str]:
    """The backup dir, when it lies inside a restored path: never removed or replaced by a
    restore (archive names, like the kept paths of an incomplete archive). A restore into the
    backup dir is refused, except a drill's into its own scratch dir there (``scratch``)."""
    bk = os.path.realpath(config.backup_dir)
    real = os.path.realpath(t.dest)
    refused = ConfigError(
        f"{t.name} -> {t.dest} is the backup directory or inside it: restore it elsewhere with --target"
    )
    if bk == real or (_inside(real, bk) and not scratch):
        raise refused
    # by identity too: a bind mount shows the same directory under a name realpath() cannot relate
    bk_id = dir_id(bk)
    if bk_id is not None:
        for q, ident in lineage(real):
            if ident == bk_id and (str(q) == real or not scratch):
                raise refused
        if not _inside(bk, real) and any(ident == dir_id(real) for q, ident in lineage(bk)[1:]):
            raise ConfigError(
                f"{t.name} -> {t.dest} holds the backup directory ({bk}) under another name (a bind "
                "mount?): a restore would move it away; restore it elsewhere with --target"
            )
    return [f"{t.name}/{os.path.relpath(bk, real)}"] if _inside(bk, real) else []


def resolve_targets(
    config: BackupConfig, meta: dict[str, Any], target_dir: Path | None, only: list[str] | None
) -> list[Target]:
    names = list(meta.get("paths") or {})
    if only is not None:
        if not only:
            raise ConfigError(
                "--only is empty: name the paths to restore, comma-separated "
                f"(this archive holds: {', '.join(names) or 'nothing'}), or leave --only out for all"
            )
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(
                f"--only {','.join(unknown)}: not in this archive; it holds: {', '.join(names) or 'nothing'}"
            )
        names = [n for n in names if n in only]
    if target_dir is not None and os.path.lexists(target_dir) and not target_dir.is_dir():
        raise ConfigError(f"--target {target_dir} exists and is not a directory: name a directory")
    by_name = {p.name: p.path for p in config.paths}
    targets = []
    mps = _mount_points()
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
        if target_dir is None:
            _no_link_on_the_way(config.data_dir, n, dest)
            dest = _through_followed_link(n, dest, (meta.get("followed") or {}).get(n))
        targets.append(Target(n, dest, mount=is_mount(Path(os.path.realpath(dest)), mps)))
    if target_dir is not None:
        _not_the_live_data(config, target_dir, targets)
    if os.environ.get("GOFR_BACKUP_IN_CONTAINER") == "1":
        for t in targets:
            if _mount_point(t.dest) == Path("/"):
                raise ConfigError(
                    f"{t.name} -> {t.dest} is not on a mounted volume in this container, so a restore "
                    "there would vanish with the container: mount its volume, or leave it out with --only"
                )
    for t in targets:
        anc = _existing_ancestor(t.parent)
        if not anc.is_dir():
            raise ConfigError(f"cannot restore {t.name} to {t.dest}: {anc} is not a directory")
        if not os.access(anc, os.W_OK):
            raise ConfigError(
                f"cannot restore {t.name} to {t.dest}: {anc} is not writable by uid:gid "
                f"{os.geteuid()}:{os.getegid()} (a read-only mount?)"
            )
    # parents before children, so nested paths (e.g. data:. and embeddings:embeddings) end up right
    targets.sort(key=lambda t: len(t.dest.parts))
    return targets


def _not_the_live_data(config: BackupConfig, target_dir: Path, targets: list[Target]) -> None:
    """--target restores a copy: a DIR/<name> that is (after resolving links) a configured path, or
    holds one (``--target .`` run in the data dir, ``--target $DATA_DIR``), would replace live data;
    a DIR inside a configured path would write the copy into it."""
    live = {p.name: os.path.realpath(p.path) for p in config.paths}
    real_dir = os.path.realpath(target_dir)
    for n, lp in live.items():
        if _inside(real_dir, lp):  # a "copy" written into the live data, that the next backup holds
            raise ConfigError(
                f"--target {target_dir} lies inside the live path {n} ({lp}): a copy there would be "
                "written into the live data; pick a directory outside the data"
            )
    for t in targets:
        real = os.path.realpath(t.dest)
        for n, lp in live.items():
            if real == lp or _inside(lp, real):
                raise _the_live_path(target_dir, t, real, "is" if real == lp else "holds", n, lp)
    # by identity (st_dev, st_ino) too: a bind mount shows a live directory under another name,
    # which realpath() cannot relate to it
    is_live: dict[DirId, tuple[str, str]] = {}
    holds_live: dict[DirId, tuple[str, str]] = {}  # the ancestors of every live path
    for n, lp in live.items():
        for q, ident in lineage(lp):
            (is_live if str(q) == lp else holds_live).setdefault(ident, (n, lp))
    for q, ident in lineage(target_dir):
        if ident in is_live:
            n, lp = is_live[ident]
            raise ConfigError(
                f"--target {target_dir} "
                + ("is" if str(q) == real_dir else "lies inside")
                + f" the live path {n} ({lp}, reached as {q}): a copy there would be written into the "
                "live data; pick a directory outside the data"
            )
    for t in targets:
        real = os.path.realpath(t.dest)
        for q, ident in lineage(real):
            if str(q) == real and ident in is_live:
                raise _the_live_path(target_dir, t, real, "is", *is_live[ident])
            if str(q) == real and ident in holds_live:
                raise _the_live_path(target_dir, t, real, "holds", *holds_live[ident])
            if ident in is_live:
                raise _the_live_path(target_dir, t, real, "lies inside", *is_live[ident])


def _the_live_path(target_dir: Path, t: Target, real: str, how: str, n: str, lp: str) -> ConfigError:
    return ConfigError(
        f"--target {target_dir}: {t.name} would go to {real}, which {how} the live path {n} ({lp}); "
        "--target restores a copy and leaves the live data untouched: name another directory, or "
        "leave --target out to restore in place"
    )


def _foreign_project(config: BackupConfig, archive: Path, meta: dict[str, Any]) -> str | None:
    """The other project an archive belongs to (its header's ``project``, or its name), if any."""
    parsed = layout.parse(archive.name)
    owners = {p for p in (meta.get("project"), parsed.project if parsed else None) if isinstance(p, str)}
    return next(iter(sorted(owners - {config.project})), None)


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


def is_mount(p: Path, mps: set[str] | None = None) -> bool:
    mps = mps if mps is not None else _mount_points()
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
        meta = read_meta(archive)
    except BackupError as e:
        err = _read_error(archive)
        if err is not None:  # the disk that holds it, not the archive: nothing is known about it
            raise CouldNotCheck(
                f"cannot restore {archive.name}: could not read it: {err.strerror or err} (the archive "
                "itself may be fine; nothing was concluded); nothing was changed"
            ) from None
        raise VerifyError(f"refusing to restore {archive.name}: {e}; nothing was changed") from None
    bad = header_problem(meta)  # before any name is joined onto a destination
    if bad:
        raise _refuse(archive, bad)
    return meta


def _read_error(archive: Path) -> OSError | None:
    """The OSError a plain read of the archive's first MiBs meets (EIO on a failing disk), if any."""
    try:
        with open(archive, "rb", buffering=0) as f:
            for _ in range(4):
                if not f.read(1 << 20):
                    break
    except OSError as e:
        return e
    return None


def _not_ok(archive: Path, res: VerifyResult) -> VerifyError:
    """A failed pass: the archive's fault (refused), or could not check (nothing concluded)."""
    if not res.checked:
        return CouldNotCheck(f"cannot restore {archive.name}: {res.error}; nothing was changed")
    return _refuse(archive, str(res.error))


def _record_bad(config: BackupConfig, archive: Path, entry: Entry, res: VerifyResult) -> None:
    """A restore's own pass found this archive of the backup dir bad (checked, not ok): record it
    as `verify` would, so that `--latest` and `status` pass it over from now on instead of picking
    it again (an entry that already says so is left as it is). A restore may run with the backup
    volume read-only: then it is only refused."""
    if not res.checked or not entry.get("path") or entry.get("verified") is False:
        return
    from .schedule import now_iso
    from .scrub import verdict_fields

    lay = config.layout
    try:
        if lay.archive(entry["path"]) != archive:
            return  # a decrypted or fetched copy: not the file the entry describes
        Manifest(lay.root).set_fields(entry["path"], **verdict_fields(res, now_iso(datetime.now(UTC)), entry))
    except (OSError, BackupError):
        pass


def _judge_after_fault(
    archive: Path, sha: str | None, should_stop: Callable[[], bool], fault: LocalFault
) -> None:
    """A write on this side (the staging, a drill's scratch copy) stopped the pass before the
    archive was read to its end. Whether the archive is sound decides what that means: it is read
    once more, hashing only (a short member still ends the read at once), and a damaged archive is
    refused for its own fault; only a sound one leaves the LocalFault to stand (could not run)."""
    try:
        with capturing(Capture()):  # nothing copied into the scratch side that just failed
            res = verify_archive(archive, sha, should_stop=should_stop)
    except LocalFault:
        return
    if res.checked and not res.ok:
        raise _refuse(archive, f"{res.error} (the restore had also stopped: {fault})")


# -- incomplete archives ---------------------------------------------------------------------------
def is_incomplete(entry: Entry, end: dict[str, Any] | None) -> bool:
    """The manifest and the archive's own end marker may disagree (a rebuilt manifest does not
    know; a hand-edited one may lie): either one saying "incomplete" is enough."""
    if entry.get("complete") is False:
        return True
    return end is not None and (end.get("complete") is False or bool(end.get("unreadable")))


def missing_names(meta: dict[str, Any], end: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """The end marker's unreadable paths (as the backup saw them) as archive names, through the
    header's ``resolved_paths``; and those that map to no path."""
    roots = {n: str(r).rstrip("/") for n, r in (meta.get("resolved_paths") or {}).items()}
    names: list[str] = []
    unknown: list[str] = []
    for raw in (end or {}).get("unreadable") or []:
        p = str(raw).rstrip("/")
        hits = [n + p[len(r) :] for n, r in roots.items() if p == r or p.startswith(r + "/")]
        if hits:
            names += hits
        else:
            unknown.append(str(raw))
    return sorted(set(names)), unknown


def _apply_incomplete(
    archive: Path,
    entry: Entry,
    meta: dict[str, Any],
    end: dict[str, Any] | None,
    targets: list[Target],
    allow: bool,
    only: bool = False,
) -> bool:
    """True when the restore of ``targets`` is incomplete (then ``allow`` is needed). With ``--only``
    (``only``), only what the archive could not read under the selected names counts, when the
    end marker names every such path; otherwise all of it does."""
    if not is_incomplete(entry, end):
        return False
    names, unknown = missing_names(meta, end)
    if only and names and not unknown:
        names = [n for n in names if any(n == t.name or n.startswith(t.name + "/") for t in targets)]
        if not names:
            return False  # all it could not read lies outside the selected paths
    if not allow:
        what = _show(names + unknown) if names or unknown else "files it does not name"
        raise ConfigError(
            f"{archive.name} is incomplete: the backup could not read {what}; restoring it would "
            "remove them from the live data. Pass --allow-incomplete to restore it and leave those "
            "paths as they are, or restore a complete archive (--latest)"
        )
    for t in targets:
        t.keep = [n for n in names if n == t.name or n.startswith(t.name + "/")]
        t.keep_all = bool(unknown) or not names  # not known what is missing: remove nothing
    return True


# -- checks on the whole restore ---------------------------------------------------------------------
def _inside(p: str, root: str) -> bool:
    return p != root and p.startswith(root.rstrip("/") + "/")


def _refuse(archive: Path, why: str) -> VerifyError:
    return VerifyError(f"refusing to restore {archive.name}: {why}; nothing was changed")


def _check_whole(archive: Path, ex: Extractor, targets: list[Target]) -> list[tuple[Target, Target]]:
    """With every link of the archive known: no path the restore still writes after extraction
    (a nested destination, a kept path) is reached through a symlink or a file of the archive;
    no mount point lies inside a restored path, except a nested target's own. Returns the
    (outer, inner) pairs whose inner staged tree goes into the outer one before the swap."""
    real = {t.name: os.path.realpath(t.dest) for t in targets}
    mounts = {real[t.name] for t in targets if t.mount}
    merged: list[tuple[Target, Target]] = []
    for b in targets:
        outer = [a for a in targets if a is not b and _inside(real[b.name], real[a.name])]
        if not outer:
            continue
        a = max(outer, key=lambda x: len(real[x.name]))
        rel = os.path.relpath(real[b.name], real[a.name])
        inner = f"{a.name}/{rel}"
        why = ex.blocked(inner, inclusive=True)
        if why:
            raise _refuse(
                archive,
                f"{b.name} -> {b.dest} lies inside {a.name} -> {a.dest}, and {why}: restoring "
                f"{b.name} there would go through it. Restore them one at a time (--only) or with --target",
            )
        c = ex.changes[a.name]
        c.created = [n for n in c.created if n != inner and not n.startswith(inner + "/")]
        c.replaced = [n for n in c.replaced if n != inner and not n.startswith(inner + "/")]
        c.removed = [n for n in c.removed if n != inner and not n.startswith(inner + "/")]
        a.keep = [k for k in a.keep if k != inner and not k.startswith(inner + "/")]
        if b.mount:
            if not a.mount or "/" in rel:
                raise _refuse(
                    archive,
                    f"{b.dest} is a mount point inside {a.name} -> {a.dest}: restore {b.name} on its own "
                    "(--only) or unmount it",
                )
            a.skip.append(rel)
            continue
        if os.stat(_existing_ancestor(a.parent)).st_dev != os.stat(_existing_ancestor(b.parent)).st_dev:
            raise _refuse(
                archive,
                f"{b.name} -> {b.dest} lies inside {a.name} -> {a.dest} but on another file system: "
                "restore them one at a time (--only)",
            )
        merged.append((a, b))
    for t in targets:
        for mp in sorted(_mount_points() or ()):
            if _inside(mp, real[t.name]) and mp not in mounts:
                raise _refuse(
                    archive,
                    f"{mp} is a mount point inside {t.name} -> {t.dest}: a restore would move it with "
                    f"the old tree; restore {t.name} with --target, or unmount {mp} first",
                )
        if t.mount and ex.seen.get(t.name) not in (None, "d"):
            raise _refuse(archive, f"{t.dest} is a mount point but the archive holds a file for {t.name!r}")
        for k in t.keep:
            why = ex.blocked(k)
            if why:
                raise _refuse(archive, f"{k} is kept as it is (the archive never saved it), but {why}")
    return merged


def _merge(a: Target, b: Target) -> None:
    """Put b's staged tree where it belongs in a's (replacing a's copy of it), so that one swap
    of a brings both; parents reached without following any link."""
    rel = os.path.relpath(os.path.realpath(b.dest), os.path.realpath(a.dest))
    parent, _, leaf = rel.rpartition("/")
    fd = open_dir_nofollow(a.staged, parent, create=True)
    try:
        st = os.fstat(fd)
        with contextlib.suppress(FileNotFoundError):
            os.rename(leaf, a.base / f"nested-{b.name}", src_dir_fd=fd)
        os.rename(b.staged, leaf, dst_dir_fd=fd)
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(fd)
    b.merged = True
    a.keep = sorted(set(a.keep) | {f"{a.name}/{rel}{k[len(b.name) :]}" for k in b.keep})
    b.keep = []  # its old tree goes with a's: a carries them


# -- the restore ------------------------------------------------------------------------------------
def recovery_dirs(config: BackupConfig, targets: Sequence[Target] = ()) -> list[Path]:
    """Where the staging of a restore that died can be: beside (or inside, for a mount point)
    every configured path and every path of this restore."""
    mps = _mount_points()
    out = [p.path if is_mount(p.path, mps) else p.path.parent for p in config.paths]
    return list(dict.fromkeys(out + [t.parent for t in targets]))


def recover_interrupted(config: BackupConfig, targets: Sequence[Target] = ()) -> list[str]:
    """Finish (or undo) restores that died; for ``restore`` and the service's start."""
    return recover(recovery_dirs(config, targets))


# -- chains (issue 17) -------------------------------------------------------------------------------
@dataclass
class Link:
    """One archive of a chain to restore: its (plain) file, the checksum it is trusted to have (the
    manifest's), and its manifest entry if there is one."""

    archive: Path
    sha256: str | None = None
    entry: Entry = field(default_factory=lambda: Entry())


def _filename(lk: Link) -> str:
    """The archive's own name (a fetched or decrypted copy may lie in a file named otherwise)."""
    name = lk.entry.get("filename")
    name = name if isinstance(name, str) and name else lk.archive.name
    return name.removesuffix(layout.AGE_SUFFIX)  # a sealed archive's chain names the plain archive


def _ordinal(i: int, n: int) -> str:
    return "its full" if i == 0 else f"incremental {i} of {n - 1} of its chain"


def _link_not_ok(archive: Path, links: Sequence[Link], lk: Link, res: VerifyResult) -> VerifyError:
    """A failed pass over an archive of ``archive``'s chain before it: refused, naming that link
    (or could not check, when it could not be read)."""
    what = _ordinal(list(links).index(lk), len(links))
    if not res.checked:
        return CouldNotCheck(
            f"cannot restore {archive.name}: could not read {lk.archive.name} ({what}): {res.error}; "
            "nothing was changed"
        )
    return _refuse(archive, f"its chain is broken at {lk.archive.name} ({what}): {res.error}")


def _file_sha256(path: Path, should_stop: Callable[[], bool]) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while b := f.read(1 << 20):
            h.update(b)
            if should_stop():
                raise Interrupted(f"interrupted while checking {path.name}; nothing was changed")
    return h.hexdigest()


def _check_chain(
    config: BackupConfig,
    links: Sequence[Link],
    metas: list[dict[str, Any]],
    req: RestoreRequest,
    should_stop: Callable[[], bool],
) -> None:
    """Before anything is staged: every incremental of the chain matches its checksum (the
    manifest's and its .sha256), and each header names the one before it (``chain.parent``) and
    the chain's full. The full is held to its records by the restore's own pass over it (which
    fails the restore before anything is swapped in), unless they disagree: then it is read here
    too. A failure names the broken link; the damaged archive is recorded as `verify` would."""
    last = links[-1].archive
    n = len(links)
    if n == 1:  # an incremental on its own: a restore of it alone would be silently short
        raise VerifyError(
            f"refusing to restore {last.name}: it is an incremental archive (its header says so), and "
            "the archives it depends on are not known here (no manifest entry records its chain): "
            "restore a full archive, or extract its chain with GNU tar ('tar --listed-incremental="
            "/dev/null -xf' each archive, full first); nothing was changed"
        )
    for i, (lk, meta) in enumerate(zip(links, metas, strict=True)):
        kind = meta.get("kind")
        if (i == 0) == (kind == "incremental"):
            raise VerifyError(
                f"refusing to restore {last.name}: its chain is broken at {lk.archive.name} "
                f"({_ordinal(i, n)}): its header says it is "
                + ("an incremental" if i == 0 else "not an incremental")
                + "; nothing was changed"
            )
    digests: list[str] = []
    for i, (lk, meta) in enumerate(zip(links, metas, strict=True)):
        name, what = lk.archive.name, _ordinal(i, n)
        side = layout.read_sidecar(lk.archive)
        recorded = {w for w in (lk.sha256, side or None) if w}
        try:
            if i == 0 and len(recorded) == 1:
                # the full (the one big archive): its restore pass checks it against the same
                # records before anything is swapped in; reading it twice costs seconds per GB
                digest = next(iter(recorded))
            else:
                digest = _file_sha256(lk.archive, should_stop)
        except OSError as e:
            raise CouldNotCheck(
                f"cannot restore {last.name}: could not read {name} ({what}): {e.strerror or e}; "
                "nothing was changed"
            ) from None
        want = [w for w in (lk.sha256, side or None) if w]
        why: str | None = None
        if not want:
            why = (
                f"it has no checksum to check it against ({layout.sidecar_path(lk.archive).name} is missing)"
            )
        elif any(w != digest for w in want):
            why = f"its sha256 is {digest[:16]}, not the recorded {next(w for w in want if w != digest)[:16]}"
        if why:
            if not req.dry_run and lk.sha256 and digest != lk.sha256:  # the archive, not its .sha256
                _record_bad(
                    config, lk.archive, lk.entry, VerifyResult(lk.archive, False, f"checksum mismatch: {why}")
                )
            raise VerifyError(
                f"refusing to restore {last.name}: its chain is broken at {name} ({what}): {why}; nothing was changed"
            )
        raw_link = meta.get("chain")
        link: dict[str, Any] = raw_link if isinstance(raw_link, dict) else {}
        if i > 0 and link.get("parent") != {"filename": _filename(links[i - 1]), "sha256": digests[-1]}:
            why = f"its header does not name {_filename(links[i - 1])} as its parent"
        elif i > 0 and link.get("full") != {"filename": _filename(links[0]), "sha256": digests[0]}:
            why = f"its header does not name {_filename(links[0])} as its full"
        if why:
            raise VerifyError(
                f"refusing to restore {last.name}: its chain is broken at {name} ({what}): {why}; nothing was changed"
            )
        digests.append(digest)


def chain_summary(links: Sequence[Link], metas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for lk, meta in zip(links, metas, strict=True):
        try:
            size: int | None = lk.archive.stat().st_size
        except OSError:
            size = None
        out.append(
            {
                "filename": lk.archive.name,
                "kind": "incremental" if meta.get("kind") == "incremental" else "full",
                "created": meta.get("created")
                if isinstance(meta.get("created"), str)
                else lk.entry.get("created"),
                "size_bytes": size,
            }
        )
    return out


def restore(
    config: BackupConfig,
    archive: Path,
    req: RestoreRequest,
    expected_sha256: str | None = None,
    entry: Entry | None = None,
    confirm: Callable[[RestorePlan], bool] = lambda p: True,
    should_stop: Callable[[], bool] = lambda: False,
    notes: list[str] | None = None,
    passed: list[dict[str, str]] | None = None,
    earlier: Sequence[Link] = (),
) -> RestorePlan:
    """Plan (``req.dry_run``) or restore ``archive``: the same pass and the same checks either way.
    ``earlier``: the archives of its chain before it, full first (none for a full archive)."""
    entry = entry or Entry()
    links = [*earlier, Link(archive, expected_sha256, entry)]
    metas: list[dict[str, Any]] = []
    for lk in links:
        try:
            metas.append(_read_meta_or_refuse(lk.archive))
        except CouldNotCheck:
            raise
        except VerifyError:
            # its head is damaged: one verification pass says what is wrong, and it is recorded
            res = verify_archive(lk.archive, lk.sha256, should_stop=should_stop)
            if res.ok:
                raise
            if not req.dry_run:
                _record_bad(config, lk.archive, lk.entry, res)
            if lk.archive is not archive:
                raise _link_not_ok(archive, links, lk, res) from None
            raise _not_ok(archive, res) from None
    meta = metas[-1]
    chained = len(links) > 1 or meta.get("kind") == "incremental"
    if chained:
        _check_chain(config, links, metas, req, should_stop)
    other = _foreign_project(config, archive, meta)
    for lk, m in zip(links[:-1], metas[:-1], strict=True):
        if _foreign_project(config, lk.archive, m) != other:
            raise _refuse(archive, f"{lk.archive.name}, of its chain, belongs to another project")
    if other is not None and req.target is None:
        raise ConfigError(
            f"{archive.name} is an archive of project {other}, not {config.project}: restoring it in place "
            f"would replace {config.project}'s data with {other}'s; look at it with --target DIR, or "
            f"restore it as {other} (GOFR_PROJECT={other})"
        )
    targets = resolve_targets(config, meta, req.target, req.only)
    protect = {t.name: _protected(config, t, req.scratch) for t in targets}
    for lk in links[:-1]:
        if lk.entry.get("complete") is False and not req.allow_incomplete:
            raise ConfigError(
                f"{archive.name} depends on {lk.archive.name}, which is incomplete (the backup could not "
                "read everything): pass --allow-incomplete to restore it and remove nothing from the live "
                "data that the chain does not hold, or restore a complete archive (--latest)"
            )
    if entry.get("complete") is False and not req.allow_incomplete:
        res = verify_archive(archive, expected_sha256, should_stop=should_stop)  # to name what it misses
        if not res.ok:
            raise _not_ok(archive, res)
        _apply_incomplete(archive, entry, meta, res.end, targets, False, req.only is not None)
    notes = list(notes or [])
    if other is not None:
        notes.append(
            f"{archive.name} is an archive of project {other}, not {config.project}: a copy under {req.target}"
        )
    if chained:
        names = [lk.archive.name for lk in links]
        if len(names) > 4:
            names = [names[0], names[1], f"... {len(names) - 3} more", names[-1]]
        notes.append(
            f"{archive.name} is restored with its chain: {', then '.join(names)} ({len(links)} archives, "
            "each checked against its checksum before anything is swapped in)"
        )
    if req.dry_run:
        notes += [
            f"a restore that died after its commit ({j}) will be finished first; this plan compares "
            "with the live data as it is now"
            for j in pending_journals(recovery_dirs(config, targets))
        ]
    else:
        notes += recover_interrupted(config, targets)
    staging = Staging(targets)
    parent_times: dict[Path, tuple[int, int]] = {}
    committed = False
    try:
        if not req.dry_run:
            for t in targets:
                t.parent.mkdir(parents=True, exist_ok=True)
                st = os.stat(t.parent)
                parent_times.setdefault(t.parent, (st.st_atime_ns, st.st_mtime_ns))
            staging.create()
        ahead = (
            Superseded.start([lk.archive for lk in links], should_stop)
            if len(links) > 1 and not req.dry_run
            else None
        )
        try:
            ex, res, earlier_incomplete, seen = _extract_chain(
                config, links, metas, req, targets, ahead, should_stop
            )
        except Rewind:  # the plan was wrong somewhere (see extract.Rewind): write everything
            if ahead is not None:
                ahead.close()  # its helper, if it still runs: the pass again has no plan
            for t in targets:  # a configured path may be a file or a symlink: not only directories
                if os.path.isdir(t.staged) and not os.path.islink(t.staged):
                    shutil.rmtree(t.staged)
                elif os.path.lexists(t.staged):
                    os.unlink(t.staged)
            restart_capture()  # a drill's record of the passes starts again too
            ex, res, earlier_incomplete, seen = _extract_chain(
                config, links, metas, req, targets, None, should_stop
            )
        finally:
            if ahead is not None:
                ahead.close()
        notes += seen
        if earlier_incomplete and not req.allow_incomplete:
            raise ConfigError(
                f"{archive.name} depends on an incomplete archive of its chain (the backup could not read "
                "everything): pass --allow-incomplete to restore it and remove nothing from the live data "
                "that the chain does not hold, or restore a complete archive (--latest)"
            )
        incomplete = _apply_incomplete(
            archive, entry, meta, res.end, targets, req.allow_incomplete, req.only is not None
        )
        if earlier_incomplete:
            incomplete = True
            for t in targets:
                t.keep_all = True
        if not incomplete and is_incomplete(entry, res.end):
            notes.append(
                f"{archive.name} is incomplete, but all it could not read lies outside --only "
                f"{','.join(t.name for t in targets)}: these paths are complete in it"
            )
        for t in targets:
            t.keep += protect[t.name]
        if not req.dry_run:
            try:
                ex.finish()
            except Refused as e:
                raise _refuse(archive, str(e)) from None
        changes = {t.name: ex.finish_changes(t) for t in targets}
        merged = _check_whole(archive, ex, targets)
        outside = [x for t in targets for x in changes[t.name].outside]
        staged_only = [n for n in ex.skipped if f"/{STAGING_PREFIX}" not in f"/{n.rpartition('/')[0]}"]
        if staged_only:
            notes.append(
                f"not restored: {_show(staged_only, 5)}, a restore's staging that a backup caught "
                "(.gofr-restore-*: never data)"
            )
        if outside:
            notes.append(
                f"{len(outside)} symlink(s) lead outside their path; restored as links, never followed: "
                + _show(outside, 5)
            )
        plan = RestorePlan(archive, targets, changes, incomplete, notes, list(passed or []))
        plan.tree = ex.tree
        if chained:
            plan.chain = chain_summary(links, metas)
        if req.dry_run:
            return plan
        if not confirm(plan):
            raise BackupError("restore cancelled; nothing was changed")
        for a, b in merged:
            _merge(a, b)
        journal = commit(staging, archive.name)
        committed = True
        try:
            roll_forward(journal)
        except (OSError, BackupError) as e:
            raise (LocalFault if isinstance(e, OSError | LocalFault) else BackupError)(
                f"the restore stopped while swapping paths into place ({e}); run the same restore again "
                f"to finish it (its journal is {journal})"
            ) from None
        return plan
    except (OSError, LocalFault) as e:  # a write of ours (the staging, the journal): not the archive
        if committed:
            raise
        if isinstance(e, LocalFault):  # it names what it could not write, and where
            raise LocalFault(f"{e}; nothing was changed", e.cause) from None
        raise LocalFault(f"cannot stage the restore: {e}; nothing was changed", e) from None
    finally:
        staging.close()
        if not committed:
            staging.remove()
            for parent, (atime, mtime) in parent_times.items():
                with contextlib.suppress(OSError):
                    os.utime(parent, ns=(atime, mtime))


def _extract_chain(
    config: BackupConfig,
    links: Sequence[Link],
    metas: list[dict[str, Any]],
    req: RestoreRequest,
    targets: list[Target],
    plan: Superseded | None,
    should_stop: Callable[[], bool],
) -> tuple[Extractor, VerifyResult, bool, list[str]]:
    """One verification pass per archive of the chain (full first) into the staging (or, for a
    dry run, only compared with the live data). Returns the extractor, the last archive's
    result, whether an earlier archive is incomplete, and the passes' notes."""
    archive = links[-1].archive
    ex = Extractor(targets, set(metas[0].get("paths") or {}), dry=req.dry_run)
    ex.plan = plan
    if plan is not None:
        ex.premake()
    earlier_incomplete = False
    notes: list[str] = []
    for i, (lk, m) in enumerate(zip(links, metas, strict=True)):
        if i > 0:
            if plan is not None and i == 1:
                plan.wait(should_stop)  # the incrementals' passes need the whole plan
            ex.next_archive(lk.archive.name, set(m.get("paths") or {}))
        try:
            res = verify_archive(lk.archive, lk.sha256, visit=ex, should_stop=should_stop)
        except LocalFault as e:  # ours, unless the archive turns out to be damaged
            ex.close()
            _judge_after_fault(lk.archive, lk.sha256, should_stop, e)
            raise
        finally:
            ex.close()
        if not res.ok:
            if not req.dry_run:
                _record_bad(config, lk.archive, lk.entry, res)
            if lk.archive is not archive:
                raise _link_not_ok(archive, links, lk, res)
            raise _not_ok(archive, res)
        if res.note:
            notes.append(res.note)
        if lk.archive is not archive:
            earlier_incomplete |= is_incomplete(lk.entry, res.end)
            if not req.dry_run:
                try:
                    ex.finish()
                except Refused as e:
                    raise _refuse(archive, f"{lk.archive.name}: {e}") from None
    if ex.phantom:  # the plan skipped something the chain's last tree holds: never restore short
        raise Rewind(f"{min(ex.phantom)} was not written")
    extra = ex.leftover_premade()
    if extra is not None:  # made before the pass, and no archive holds it: never restore more
        raise Rewind(f"{extra} was made before the pass")
    return ex, res, earlier_incomplete, notes


# -- the library's one entry point -------------------------------------------------------------------
@dataclass
class RestoreRequest:
    """What to restore and where. ``name``: an archive file name or path (see
    BackupLayout.find); ``latest``: the newest archive that is complete and verified instead."""

    name: str | None = None
    latest: bool = False
    target: Path | None = None  # restore copies under target/<name> instead of the configured paths
    only: list[str] | None = None  # None: every path; [] is an error
    dry_run: bool = False
    from_remote: bool = False
    identity: Path | None = None  # age identity, for sealed archives
    allow_incomplete: bool = False  # restore an incomplete archive (what it never saved is kept)
    scratch: bool = False  # a drill's scratch copy: ``target`` may lie in the backup dir


def restorable(e: Entry) -> bool:
    """What ``--latest`` may choose: complete and verified, and its last restore drill (if any)
    did not fail."""
    return e.get("complete") is True and e.get("verified") is True and not drill_failed(e)


def why_not_restorable(e: Entry, on_disk: bool = True) -> str | None:
    """Why ``--latest`` passes over an archive (None: it does not)."""
    why = []
    if not on_disk:
        why.append("its file is missing")
    if e.get("verified") is False:
        why.append(f"it failed verification ({e.get('verify_error')})")
    if drill_failed(e):
        d = e.get("drill") or {}
        why.append(f"its restore drill failed ({d.get('error')}, {d.get('at')})")
    if e.get("complete") is False:
        why.append("it is incomplete (some files could not be read)")
    elif e.get("complete") is not True:
        why.append("it is not known to be complete")
    if e.get("verified") is None:
        why.append("it is not verified")
    return "; ".join(why) or None


def broken_chain(entries: Sequence[Entry], lay: layout.BackupLayout) -> Callable[[Entry], str | None]:
    """Why an incremental's chain cannot be restored (chain.chain_of, files on disk, and each
    archive of it the size the manifest records: one stat each, as ``status`` judges), or None."""

    def broken(e: Entry) -> str | None:
        if chain.kind_of(e) != chain.KIND_INCREMENTAL:
            return None
        c = chain.chain_of(entries, e, lay)
        if c.broken:
            return c.broken
        return chain.size_problem(c.archives, lay)

    return broken


def incomplete_chain(entries: Sequence[Entry], lay: layout.BackupLayout) -> Callable[[Entry], str | None]:
    """Why an incremental's restore needs --allow-incomplete although it is complete itself: an
    earlier archive of its chain is incomplete (the chain restore refuses it without that
    option, so ``--latest`` and ``status`` must not choose it), or None."""

    def incomplete(e: Entry) -> str | None:
        if chain.kind_of(e) != chain.KIND_INCREMENTAL:
            return None
        for a in chain.chain_of(entries, e, lay).archives[:-1]:
            if a.get("complete") is False:
                return f"its chain holds {a.get('filename')}, which is incomplete"
        return None

    return incomplete


def passed_over(
    entries: Sequence[Entry],
    chosen: Entry | None,
    on_disk: Callable[[Entry], bool],
    broken: Callable[[Entry], str | None] = lambda e: None,
    incomplete: Callable[[Entry], str | None] | None = None,
) -> list[dict[str, str]]:
    """The archives newer than ``chosen`` (all, without one) that ``--latest`` passes over, newest
    first, each with why (``broken``: why an incremental's chain is not intact)."""
    out = []
    for e in sorted(entries, key=created_of, reverse=True):
        if chosen is not None and created_of(e) <= created_of(chosen):
            break
        why = why_not_restorable(e, on_disk(e))
        chain_why = broken(e) if on_disk(e) else None
        if not chain_why and incomplete is not None and on_disk(e):
            why = "; ".join(w for w in (why, incomplete(e)) if w) or None
        if chain_why:
            why = "; ".join([*([why] if why else []), f"its chain is broken: {chain_why}"])
        if why:
            out.append({"filename": e["filename"], "reason": why})
    return out


def passed_over_line(p: dict[str, str], chosen: str) -> str:
    return f"passing over the newer {p['filename']}: {p['reason']}; restoring the older {chosen}"


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
    passed: list[dict[str, str]] = []
    if req.from_remote:
        from .offsite import fetched, find_remote
        from .remote import remote_for

        remote = remote_for(config)
        if remote is None or config.remote is None:
            raise ConfigError(
                f"no off-site storage configured: set {config.prefix}REMOTE_URL (s3://bucket/prefix)"
            )
        rentries = remote.read_manifest()
        notes: list[str] = []
        if req.latest:
            from .offsite import remote_gaps

            # the newest point whose chain is whole on the remote: listed, and every object there
            gap = remote_gaps(remote, rentries, {o["Key"] for o in remote.list_keys()})
            rentry = latest(rentries, usable=lambda e: e.get("complete") is not False and gap(e) is None)
            if rentry is not None:
                for e in sorted(rentries, key=created_of, reverse=True):
                    if created_of(e) <= created_of(rentry):
                        break
                    why = (
                        "it failed verification"
                        if e.get("verified") is False
                        else "it is incomplete (some files could not be read)"
                        if e.get("complete") is False
                        else gap(e)
                    )
                    if why:
                        passed.append({"filename": e["filename"], "reason": why})
                notes = [passed_over_line(p, rentry["filename"]) for p in passed]
        else:
            rentry = find_remote(rentries, req.name or "")
        if rentry is None:
            if req.latest:
                raise BackupError(f"no complete off-site backup of {config.project} in {config.remote.url}")
            raise ConfigError(f"{req.name!r} is not in {config.remote.url} (see 'gofr-backup list --remote')")
        if chain.kind_of(rentry) == chain.KIND_INCREMENTAL:  # the whole chain, fetched and checked first
            from .offsite import fetched_chain

            with fetched_chain(remote, rentries, rentry, identity) as paths:
                entries_of = chain.chain_of(rentries, rentry).archives
                links = [Link(p, None, e) for p, e in zip(paths, entries_of, strict=True)]
                return restore_chain(config, links, req, confirm, should_stop, notes, passed)
        with fetched(remote, rentry, identity) as plain:
            return _restore_plain(config, plain, None, rentry, req, confirm, should_stop, notes, passed)
    lay = config.layout
    entries = Manifest(lay.root).load(config.project)
    broken = broken_chain(entries, lay)
    incomplete = incomplete_chain(entries, lay)
    if req.latest:
        chosen = latest(
            entries,
            usable=lambda e: (
                restorable(e)
                and lay.archive(e["path"]).is_file()
                and broken(e) is None
                and incomplete(e) is None
            ),
        )
        if chosen is None:
            unknown = [e for e in unknown_completeness(entries) if lay.archive(e["path"]).is_file()]
            if unknown:
                raise BackupError(
                    f"no complete, verified backup of {config.project} in {config.backup_dir}: "
                    f"{unknown_hint(unknown)} ({len(unknown)} archive(s) whose manifest entry was rebuilt from the "
                    f"archive, newest {unknown[0]['filename']}), then restore --latest again"
                )
            raise BackupError(
                f"no complete, verified backup of {config.project} in {config.backup_dir}: see "
                "'gofr-backup list'; 'gofr-backup verify --all' checks them again, and NAME restores one"
            )
        archive = lay.archive(chosen["path"])
        passed = passed_over(entries, chosen, lambda e: lay.archive(e["path"]).is_file(), broken, incomplete)
    else:
        archive = lay.find(req.name or "")
    entry = next((e for e in entries if lay.archive(e["path"]) == archive), None) or Entry()
    said = [passed_over_line(p, archive.name) for p in passed]
    earlier: list[Link] = []
    if chain.kind_of(entry) == chain.KIND_INCREMENTAL:
        c = chain.chain_of(entries, entry, lay)
        if c.broken is not None:
            raise VerifyError(
                f"cannot restore {archive.name}: its chain is broken: {c.broken}; nothing was changed "
                "(restore an older archive, or 'gofr-backup list' to see the chains)"
            )
        earlier = [Link(lay.archive(e["path"]), e.get("sha256"), e) for e in c.archives[:-1]]
        if any(layout.is_sealed(lk.archive.name) for lk in [*earlier, Link(archive)]):
            raise ConfigError(
                f"cannot restore {archive.name}: restoring a chain of sealed (.age) archives is not "
                "supported yet; decrypt them, or restore a full archive"
            )
    if layout.is_sealed(archive.name):
        _, err = sealed.checksum_error(archive, entry.get("sha256"))
        if err:
            raise BackupError(f"refusing to restore {archive.name}: {err}; nothing was changed")
        note = []
        if layout.read_sidecar(archive) is None:
            note = [
                f"{layout.sidecar_path(archive).name} is missing: checked against the manifest's checksum"
            ]
        with open(archive, "rb") as f, sealed.decrypted(f, archive.name, identity) as plain:
            return _restore_plain(
                config,
                plain,
                entry.get("plain_sha256"),
                entry,
                req,
                confirm,
                should_stop,
                said + note,
                passed,
            )
    return _restore_plain(
        config, archive, entry.get("sha256"), entry, req, confirm, should_stop, said, passed, earlier
    )


def _restore_plain(
    config: BackupConfig,
    archive: Path,
    sha: str | None,
    entry: Entry,
    req: RestoreRequest,
    confirm: Callable[[RestorePlan], bool],
    should_stop: Callable[[], bool],
    notes: list[str] | None = None,
    passed: list[dict[str, str]] | None = None,
    earlier: Sequence[Link] = (),
) -> RestorePlan:
    if req.dry_run:
        return restore(config, archive, req, sha, entry, confirm, should_stop, notes, passed, earlier)
    # the backup volume may be mounted read-only for a restore
    with run_lock(config.layout, config.lock_timeout, should_stop, readonly_ok=True):
        return restore(config, archive, req, sha, entry, confirm, should_stop, notes, passed, earlier)


def restore_chain(
    config: BackupConfig,
    links: Sequence[Link],
    req: RestoreRequest,
    confirm: Callable[[RestorePlan], bool] = lambda p: True,
    should_stop: Callable[[], bool] = lambda: False,
    notes: list[str] | None = None,
    passed: list[dict[str, str]] | None = None,
) -> RestorePlan:
    """Restore (or plan, ``req.dry_run``) the restore point ``links[-1]`` from its chain ``links``
    (full first; plain archives already on this machine, e.g. fetched from the remote or a drill's
    copies), under the project's run lock: every archive is checked against ``Link.sha256`` and its
    .sha256 before anything is staged, then each is extracted in turn into one staging, then the
    swap. ``req.name``/``latest``/``from_remote`` are not used. One link: a plain restore."""
    if not links:
        raise ConfigError("nothing to restore: the chain is empty")
    *earlier, last = links
    return _restore_plain(
        config, last.archive, last.sha256, last.entry, req, confirm, should_stop, notes, passed, earlier
    )
