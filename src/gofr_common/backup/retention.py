"""Retention: which archives to keep, and pruning the rest.

:func:`plan_retention` is pure (entries in, deletions out) and shared by local and remote
retention; :func:`prune` applies it to the backup directory, adopts archives the manifest does not
know, and removes what dead processes left (partial files, orphan checksum files). The manifest is
untrusted input: prune deletes only this project's archives, by name, as regular files in their
tier directory, never through a symlink, and verifies a failed archive once more before deleting
it.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import logging
import os
import shutil
import stat
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import layout
from .chain import Chain, chains_in, children
from .config import BackupConfig
from .fsutil import NotOurs, regular_in, tier_dir_fd, unlink_regular
from .incremental import SNAP_SUFFIX
from .layout import TIERS
from .manifest import Entry, Manifest, created_of, entry_from_archive, failed
from .schedule import now_iso
from .scrub import check, last_check, verdict_fields

log = logging.getLogger("gofr_backup")


@dataclass(frozen=True)
class Policy:
    retention_days: int = 30
    max_count: int = 90
    weekly_weeks: int = 8
    monthly_months: int = 12

    @classmethod
    def of(cls, c: BackupConfig) -> Policy:
        return cls(c.retention_days, c.max_count, c.weekly_retention_weeks, c.monthly_retention_months)


def sub_months(dt: datetime, n: int) -> datetime:
    y, m = divmod(dt.month - 1 - n, 12)
    year, month = dt.year + y, m + 1
    return dt.replace(year=year, month=month, day=min(dt.day, calendar.monthrange(year, month)[1]))


def age_cutoff(tier: str, now: datetime, p: Policy) -> datetime:
    if tier == "daily":
        return now - timedelta(days=p.retention_days)
    if tier == "weekly":
        return now - timedelta(weeks=p.weekly_weeks)
    return sub_months(now, p.monthly_months)


@dataclass
class Plan:
    """What retention does to a set of entries. ``delete``: (entry, why), in the order to delete
    them: an archive always after every archive of its chain that is newer (children before
    parents), so an interrupted prune never leaves a kept archive without its parent. ``needed``:
    archives the limits would delete but that a kept restore point needs (its chain): (entry, why
    the limits would delete it, the kept restore points that need it, oldest first)."""

    delete: list[tuple[Entry, str]] = field(default_factory=list)
    needed: list[tuple[Entry, str, list[Entry]]] = field(default_factory=list)


def plan_retention(entries: Iterable[Entry], now: datetime, policy: Policy) -> list[tuple[Entry, str]]:
    """Which entries to delete, and why, children before parents (see :func:`retention_plan`)."""
    return retention_plan(entries, now, policy).delete


def retention_plan(entries: Iterable[Entry], now: datetime, policy: Policy) -> Plan:
    """Which entries to delete, and why, and which are kept only because a kept one needs them.
    Pure: no I/O.

    Every archive is a **restore point**: itself and the archives before it in its chain
    (chain.py; a full archive, or an entry without ``kind``, is a chain of one). The rules decide
    which restore points are kept; a kept restore point keeps its whole chain. Per tier, newest
    first:

    1. Archives that failed verification are deleted (they cannot be restored and must not take
       the slots of good ones) -- unless only their .sha256 file is damaged (archive_intact), and
       never the last archive of a tier: when nothing else is left, the newest failed one stays
       (flagged; ``status`` is unhealthy while it is there). prune() verifies each once more
       before it deletes it. A failed archive is never kept because another needs it: the
       restore points after it are broken already.
    2. Protected whatever their age (see :func:`protected`), with their chains: the newest restore
       point that is complete and verified and whose chain is intact, and the newest verified one
       (and, while no restore point is known to be complete, every one whose completeness is
       unknown). So a service that was down for longer than the retention period never deletes
       its last good backup, and an incomplete backup never costs the last complete one.
    3. Older than the tier's age limit: not kept as a restore point (unless protected).
    4. daily only: beyond the newest ``max_count`` restore points: not kept (protected ones count
       as places; restore points whose chain is broken get places only after every intact one).
    5. An archive not kept as a restore point is deleted, unless a kept restore point needs it
       (it is then in ``needed``). So a chain leaves as a whole, newest first, once no kept
       restore point needs any of it, and a full stays while an incremental after it is kept.
    """
    es_all = list(entries)
    plan = Plan()
    gone: list[tuple[Entry, str]] = []
    by_tier: dict[str, list[Entry]] = {}
    for e in es_all:
        by_tier.setdefault(e["tier"], []).append(e)
    for tier, es in by_tier.items():
        es.sort(key=lambda e: (created_of(e), e["filename"]), reverse=True)
        good = [e for e in es if not failed(e)]
        bad = [e for e in es if failed(e)]
        last = bad[:1] if not good else []  # a tier never loses its last archive to this rule
        for e in bad[len(last) :]:
            gone.append((e, f"failed verification: {e.get('verify_error') or 'unknown error'}"))
        if not good:
            continue
        chain = chains_in(es)
        chains = {id(e): chain(e) for e in good}
        intact = {id(e) for e in good if restorable(chains[id(e)])}
        keep = protected(good, intact)
        cutoff = age_cutoff(tier, now, policy)
        kept: list[Entry] = []
        dropped: list[tuple[Entry, str]] = []
        for e in good:
            if not any(e is k for k in keep) and created_of(e) < cutoff:
                dropped.append((e, f"older than the {tier} limit ({_limit_text(tier, policy)})"))
            else:
                kept.append(e)
        if tier == "daily" and len(kept) > policy.max_count:
            others = [e for e in kept if not any(e is k for k in keep)]
            others.sort(key=lambda e: id(e) not in intact)  # stable: newest first within each
            over = others[max(policy.max_count - len(keep), 0) :]
            dropped += [(e, f"beyond MAX_COUNT={policy.max_count}") for e in over]
            out_ids = {id(e) for e in over}
            kept = [e for e in kept if id(e) not in out_ids]
        # the archives the kept restore points need; only good ones can be dropped above, so a
        # failed one (a chain stops at it, chain.py) is never kept for this: it is deleted, and
        # the restore points after it are broken whatever is kept
        need: dict[int, list[Entry]] = {}
        for k in kept:
            for a in chains[id(k)].archives:
                if a is not k:
                    need.setdefault(id(a), []).append(k)
        for e, why in dropped:
            if id(e) in need:
                plan.needed.append(
                    (e, why, sorted(need[id(e)], key=lambda k: (created_of(k), k["filename"])))
                )
            else:
                gone.append((e, why))
    plan.delete = children_first(gone)
    return plan


def restorable(c: Chain) -> bool:
    """Whether a restore point's chain is intact: every link there and matching
    (:func:`chain.chain_of`), and no archive before the point itself failed verification (not
    even one whose only damage is its .sha256 file)."""
    return c.ok and all(a.get("verified") is not False for a in c.archives[:-1])


def children_first(plan: list[tuple[Entry, str]]) -> list[tuple[Entry, str]]:
    """``plan`` reordered so that each entry comes after every entry of the plan that names it as
    its parent, directly or through others (newest first within a chain). Otherwise the order is
    kept: a plan without chains is returned as it is."""
    kids = children([e for e, _ in plan])
    if not kids:
        return list(plan)
    why = {id(e): w for e, w in plan}
    out: list[tuple[Entry, str]] = []
    entered: set[int] = set()
    for e, _ in plan:
        stack: list[tuple[Entry, bool]] = [(e, False)]
        while stack:  # depth first, each entry after its children (a loop is cut where it closes)
            x, ready = stack.pop()
            if ready:
                out.append((x, why[id(x)]))
                continue
            if id(x) in entered:
                continue
            entered.add(id(x))
            stack.append((x, True))
            mine = kids.get(f"{x.get('project')}/{x.get('tier')}/{x.get('filename')}", [])
            # pushed oldest first, so the newest child (and its subtree) is deleted first
            for c in sorted(mine, key=lambda c: (created_of(c), c["filename"])):
                if id(c) not in entered:
                    stack.append((c, False))
    return out


def protected(good: list[Entry], intact: set[int] | None = None) -> list[Entry]:
    """Of one tier's restore points not known to be bad (newest first), those kept whatever their
    age: the newest complete and verified one and the newest verified one; while none is complete
    and verified, also the newest complete one; while none is verified, the newest one. "Complete"
    is known only from the writer or an archive's end marker (``complete: true``): an entry rebuilt
    or adopted from the archive alone (``complete: null``) is not complete until a verification has
    read its end marker, and while no archive of the tier is known to be complete, none of those
    unknown ones is deleted for age or count (any of them may be the last complete backup).

    ``intact``: the ids of the restore points whose chain is intact (:func:`restorable`; None: all
    of them). Only those are candidates: a restore point after a broken link is not restorable and
    protects nothing; only when no restore point of the tier is intact do the others stand in (a
    tier is never emptied by age)."""
    pool = good if intact is None else [e for e in good if id(e) in intact] or good
    vc = next((e for e in pool if e.get("verified") is True and e.get("complete") is True), None)
    v = next((e for e in pool if e.get("verified") is True), None)
    c = next((e for e in pool if e.get("complete") is True), None) if vc is None else None
    n = pool[0] if v is None else None
    unknown = [e for e in pool if e.get("complete") is None] if vc is None and c is None else []
    out: list[Entry] = []
    for e in (vc, v, c, n, *unknown):
        if e is not None and not any(e is o for o in out):
            out.append(e)
    return out


def _limit_text(tier: str, p: Policy) -> str:
    return {
        "daily": f"RETENTION_DAYS={p.retention_days}",
        "weekly": f"WEEKLY_RETENTION_WEEKS={p.weekly_weeks}",
        "monthly": f"MONTHLY_RETENTION_MONTHS={p.monthly_months}",
    }[tier]


# -- running housekeeping --------------------------------------------------------------------------
@dataclass
class PruneReport:
    deleted: list[dict[str, Any]] = field(default_factory=list)  # {filename, tier, reason}
    cleaned: list[str] = field(default_factory=list)  # orphan sidecars, partials, missing entries
    adopted: list[str] = field(default_factory=list)
    kept: int = 0
    dry_run: bool = False
    # what the manifest or the directory named that is not ours to touch: reported, never deleted
    skipped: list[str] = field(default_factory=list)
    # failed archives verified once more before deletion, and what that found
    rechecked: list[str] = field(default_factory=list)
    # kept only because a kept restore point needs them: {filename, path, tier, reason (what the
    # limits alone would have done), needed_by (the kept restore points that need it, oldest first)}
    needed: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deleted": self.deleted,
            "cleaned": self.cleaned,
            "adopted": self.adopted,
            "kept": self.kept,
            "skipped": self.skipped,
            "rechecked": self.rechecked,
            "needed": self.needed,
        }


@dataclass
class _Dirs:
    """The tier directories being pruned, as fds opened without following a symlink."""

    fds: dict[str, int] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


def prune(
    config: BackupConfig,
    now: datetime,
    tiers: Iterable[str] = TIERS,
    dry_run: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
) -> PruneReport:
    """Apply retention to this project's archives. The caller holds the project's run lock.

    The manifest is untrusted input: only entries naming this project's archives as
    ``<tier>/<name>`` are acted on, only regular files are deleted, and never through a symlink
    (the tier directories are opened with O_NOFOLLOW and files are unlinked relative to them).
    Anything else is reported in ``skipped`` and left alone."""
    tiers = set(tiers)
    report = PruneReport(dry_run=dry_run)
    dirs = _Dirs()
    try:
        for tier in sorted(tiers):
            try:
                fd = tier_dir_fd(config.backup_dir, tier)
            except NotOurs as e:
                dirs.refused.add(tier)
                report.skipped.append(str(e))
                continue
            if fd is not None:
                dirs.fds[tier] = fd
        _prune(config, now, tiers, dry_run, should_stop, report, dirs)
    finally:
        dirs.close()
    return report


def _prune(
    config: BackupConfig,
    now: datetime,
    tiers: set[str],
    dry_run: bool,
    should_stop: Callable[[], bool],
    report: PruneReport,
    dirs: _Dirs,
) -> None:
    manifest = Manifest(config.backup_dir)
    mine = manifest.load(config.project)
    tracked = {e.get("path") for e in mine}

    # 1. which entries may be acted on at all
    valid: dict[str, Entry] = {}
    chosen: dict[str, str] = {}  # path -> the entry kept of several that name it
    for e in mine:
        why = layout.entry_problem(e, config.project)
        if why is not None:
            report.skipped.append(f"manifest entry {e.get('path')!r}: {why}; not touched")
            continue
        if e["tier"] not in tiers or e["tier"] in dirs.refused:
            continue
        other = valid.get(e["path"])
        if other is not None:  # named twice: keep the one checked last, drop the other entry
            report.cleaned.append(f"{e['path']} (duplicate manifest entry)")
            if (last_check(e) or created_of(e)) <= (last_check(other) or created_of(other)):
                continue
        valid[e["path"]] = e
        chosen[e["path"]] = json.dumps(e, sort_keys=True)

    # 2. which of them are on disk, as regular files
    present: list[Entry] = []
    missing: list[Entry] = []
    for e in valid.values():
        fd = dirs.fds.get(e["tier"])
        try:
            st = regular_in(fd, e["filename"]) if fd is not None else None
        except NotOurs as x:
            report.skipped.append(f"{e['tier']}/{x}")
            continue
        (present if st is not None else missing).append(e)
    report.cleaned += [f"{e['path']} (manifest entry; archive is missing)" for e in missing]

    # archives on disk that the manifest does not know (e.g. a crash between rename and manifest
    # update): adopt them, so that retention sees them
    new_entries: list[Entry] = []
    orphans: list[tuple[str, str, str]] = []  # (tier, name, why)
    for tier, fd in sorted(dirs.fds.items()):
        for n in sorted(os.listdir(fd)):
            a = layout.parse(n)
            if a is not None and a.project == config.project and a.tier == tier:
                if f"{tier}/{n}" in tracked:
                    continue
                try:
                    if regular_in(fd, n) is None:
                        continue
                except NotOurs as x:
                    report.skipped.append(f"{tier}/{x}; not adopted")
                    continue
                new_entries.append(_adopt(config, tier, n))
                continue
            orphan = _orphan(n, config.project, fd)
            if orphan is not None:
                try:
                    regular_in(fd, n)
                except NotOurs as x:  # a link or a directory of that name: skipped, never "cleaned"
                    report.skipped.append(f"{tier}/{x}")
                    continue
                orphans.append((tier, n, orphan))
    report.adopted = [e["path"] for e in new_entries]
    report.cleaned += [f"{tier}/{n} ({why})" for tier, n, why in orphans]

    # 3. the plan; an archive that failed verification is verified once more before it goes
    policy = Policy.of(config)
    cands = present + new_entries
    checked: set[str] = set()
    held: set[str] = set()  # could not be checked again: kept
    updates: dict[str, dict[str, Any]] = {}
    while True:
        full_plan = retention_plan([e for e in cands if e["path"] not in held], now, policy)
        plan = full_plan.delete
        todo = [e for e, _ in plan if failed(e) and e["path"] not in checked]
        if dry_run or not todo:
            break
        for e in todo:
            res = check(config, e, should_stop)
            fields = verdict_fields(res, now_iso(now), e)
            e.update(fields)  # type: ignore[typeddict-item]
            updates[e["path"]] = fields
            checked.add(e["path"])
            if not res.checked:
                held.add(e["path"])
                report.rechecked.append(f"{e['path']}: {res.error}; kept")
            elif not failed(e):
                report.rechecked.append(f"{e['path']}: verified again: OK; kept")
            else:
                report.rechecked.append(f"{e['path']}: verified again: still bad ({res.error})")
    report.deleted = [
        {
            "filename": e["filename"],
            "path": e["path"],
            "tier": e["tier"],
            "reason": why + (" (it is verified once more first)" if dry_run and failed(e) else ""),
        }
        for e, why in plan
    ]
    report.needed = [
        {
            "filename": e["filename"],
            "path": e["path"],
            "tier": e["tier"],
            "reason": why,
            "needed_by": [k["path"] for k in by],
        }
        for e, why, by in full_plan.needed
    ]
    report.kept = len(cands) - len(plan)
    if dry_run:
        return

    doomed = {e["path"] for e, _ in plan} | {e["path"] for e in missing}
    adopted = {e["path"] for e in new_entries}

    def fn(es: list[Entry]) -> None:
        known = {e["path"] for e in es}
        es.extend(e for e in new_entries if e["path"] not in known)
        counts = Counter(e.get("path") for e in es)
        out: list[Entry] = []
        kept_paths: set[str] = set()
        for e in es:
            p = e.get("path")
            if e.get("project") != config.project or (p not in valid and p not in adopted):
                out.append(e)
                continue
            if p in doomed or p in kept_paths:
                continue
            if counts[p] > 1 and p in chosen and json.dumps(e, sort_keys=True) != chosen[p]:
                continue  # the duplicate that was not chosen
            e.update(updates.get(p, {}))  # type: ignore[typeddict-item]
            kept_paths.add(p)
            out.append(e)
        es[:] = out

    # manifest first: a crash after this leaves an untracked file (adopted next time, or deleted
    # again), never an entry that points at nothing. Then the files, children before parents (the
    # plan's order): a crash part-way leaves a chain's older part, never an incremental without
    # its parent. An archive goes first, then its .sha256 and its .snap: what a crash leaves of
    # those is an orphan, cleaned next time.
    manifest.update(fn)
    for e, why in plan:
        fd = dirs.fds[e["tier"]]
        try:
            unlink_regular(fd, e["filename"])
            unlink_regular(fd, e["filename"] + layout.SIDECAR_SUFFIX)
        except NotOurs as x:
            report.skipped.append(f"{e['tier']}/{x}")
            continue
        try:
            unlink_regular(fd, e["filename"] + SNAP_SUFFIX)
        except NotOurs as x:
            report.skipped.append(f"{e['tier']}/{x}")
        log.info("deleted %s: %s", e["path"], why)
    for e in missing:
        if e["tier"] in dirs.fds:
            for suffix in (layout.SIDECAR_SUFFIX, SNAP_SUFFIX):
                with contextlib.suppress(NotOurs):
                    unlink_regular(dirs.fds[e["tier"]], e["filename"] + suffix)
    for tier, n, why in orphans:
        try:
            unlink_regular(dirs.fds[tier], n)
        except NotOurs as x:  # replaced since it was listed: reported as what happened
            report.cleaned.remove(f"{tier}/{n} ({why})")
            report.skipped.append(f"{tier}/{x}")


def _adopt(config: BackupConfig, tier: str, name: str) -> Entry:
    """The manifest entry of an untracked archive, with its place in a chain when its header
    names one (manifest.chain_fields): adopted as a full, an incremental would be a restore point
    that needs nothing, and its parents could go."""
    return entry_from_archive(config.backup_dir, config.layout.tier_dir(tier) / name)


def _orphan(name: str, project: str, fd: int) -> str | None:
    """Why ``name`` in a tier directory is a leftover of this project (None: it is not one).
    We hold the run lock, so no live process of this project is writing a partial file."""
    for suffix, what in ((layout.SIDECAR_SUFFIX, "checksum file"), (SNAP_SUFFIX, "snapshot file")):
        if name.endswith(suffix):
            a = layout.parse(name[: -len(suffix)])
            if a and a.project == project:
                try:
                    os.stat(a.filename, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    return f"{what} without archive"
            return None
    if _dead_partial(name, project):
        what = "snapshot" if name.endswith(SNAP_SUFFIX + layout.PARTIAL_SUFFIX) else "archive"
        return f"unfinished {what} of a dead process"
    return None


def _dead_partial(name: str, project: str) -> bool:
    """Whether ``name`` is a partial archive of this project, or the partial snapshot written
    beside one (``.snap.partial``); dead: the caller holds the run lock."""
    if not name.endswith(layout.PARTIAL_SUFFIX):
        return False
    base = name[: -len(layout.PARTIAL_SUFFIX)]
    a = layout.parse(base.removesuffix(SNAP_SUFFIX))
    return a is not None and a.project == project


def remove_dead_leftovers(config: BackupConfig) -> list[str]:
    """Remove what killed runs of this project left: their partial archives and snapshots
    (``.partial``, ``.snap.partial``), snapshots whose archive never got its final name (a kill
    between the ``.snap`` rename and the archive's), in every tier, and the run's temp dir
    (``.gofr-{project}.tmp``: SQLite snapshots, encryption). Only these: a backup calls it before
    its space check, where the rest of housekeeping waits until after the new archive. The caller
    holds the run lock, so the processes that wrote them are dead. Returns what was removed, with
    sizes."""
    removed: list[str] = []
    for tier in TIERS:
        try:
            fd = tier_dir_fd(config.backup_dir, tier)
        except NotOurs:
            continue  # reported by prune
        if fd is None:
            continue
        try:
            for n in sorted(os.listdir(fd)):
                if not _dead_partial(n, config.project) and not (
                    n.endswith(SNAP_SUFFIX) and _orphan(n, config.project, fd)
                ):
                    continue
                try:
                    st = regular_in(fd, n)
                    if st is not None and unlink_regular(fd, n):
                        removed.append(f"{tier}/{n} ({_size(st.st_size)})")
                except NotOurs:
                    continue
        finally:
            os.close(fd)
    tmp = config.layout.tmp
    try:
        mode = os.lstat(tmp).st_mode
    except FileNotFoundError:
        return removed
    if stat.S_ISDIR(mode):
        size = sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(tmp) for f in fs)
        shutil.rmtree(tmp)
        removed.append(f"{tmp.name}/ ({_size(size)})")
    elif stat.S_ISREG(mode) or stat.S_ISLNK(mode):  # in the way of the temp dir: unlinked, never followed
        os.unlink(tmp)
        removed.append(
            f"{tmp.name} (a {'symlink' if stat.S_ISLNK(mode) else 'file'} where the temp dir goes)"
        )
    return removed


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
