"""Retention: which archives to keep, and pruning the rest.

:func:`plan_retention` is pure (entries in, deletions out) and shared by local and remote
retention; :func:`prune` applies it to the backup directory, adopts archives the manifest does not
know, and removes what dead processes left (partial files, orphan checksum files).
"""

from __future__ import annotations

import calendar
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import layout
from .config import BackupConfig
from .fsutil import remove_quietly
from .layout import TIERS
from .manifest import Entry, Manifest, created_of, entry_from_archive, failed

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


def plan_retention(entries: Iterable[Entry], now: datetime, policy: Policy) -> list[tuple[Entry, str]]:
    """Which entries to delete, and why. Pure: no I/O.

    Per tier, newest first:
    1. Archives that failed verification are deleted (they cannot be restored and must not take
       the slots of good ones) -- unless only their .sha256 file is damaged (archive_intact).
    2. The newest verified archive is protected whatever its age; if none is verified yet, the
       newest one not known to be bad is. So a service that was down for longer than the
       retention period never deletes its last good backup.
    3. Older than the tier's age limit: deleted (unless protected).
    4. daily only: beyond the newest ``max_count``: deleted (the protected one counts as a slot).
    """
    out: list[tuple[Entry, str]] = []
    by_tier: dict[str, list[Entry]] = {}
    for e in entries:
        by_tier.setdefault(e["tier"], []).append(e)
    for tier, es in by_tier.items():
        es.sort(key=lambda e: (created_of(e), e["filename"]), reverse=True)
        good = []
        for e in es:
            if failed(e):
                out.append((e, f"failed verification: {e.get('verify_error') or 'unknown error'}"))
            else:
                good.append(e)
        if not good:
            continue
        protected = next((e for e in good if e.get("verified") is True), good[0])
        cutoff = age_cutoff(tier, now, policy)
        kept = []
        for e in good:
            if e is not protected and created_of(e) < cutoff:
                out.append((e, f"older than the {tier} limit ({_limit_text(tier, policy)})"))
            else:
                kept.append(e)
        if tier == "daily" and len(kept) > policy.max_count:
            others = [e for e in kept if e is not protected]
            for e in others[policy.max_count - 1 :]:
                out.append((e, f"beyond MAX_COUNT={policy.max_count}"))
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

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deleted": self.deleted,
            "cleaned": self.cleaned,
            "adopted": self.adopted,
            "kept": self.kept,
        }


def prune(
    config: BackupConfig,
    now: datetime,
    tiers: Iterable[str] = TIERS,
    dry_run: bool = False,
) -> PruneReport:
    """Apply retention to this project's archives. The caller holds the project's run lock."""
    tiers = set(tiers)
    report = PruneReport(dry_run=dry_run)
    lay = config.layout
    bdir = lay.root
    manifest = Manifest(bdir)
    mine = manifest.load(config.project)
    tracked = {e["path"] for e in mine}

    # archives on disk that the manifest does not know (e.g. a crash between rename and manifest
    # update): adopt them, so that retention sees them.
    adopt = [a for a in lay.archives_on_disk() if lay.rel(a) not in tracked and a.parent.name in tiers]
    new_entries = [entry_from_archive(bdir, a) for a in adopt]
    report.adopted = [e["path"] for e in new_entries]

    present = [e for e in mine if e["tier"] in tiers and (bdir / e["path"]).is_file()]
    missing = [e for e in mine if e["tier"] in tiers and not (bdir / e["path"]).is_file()]
    report.cleaned += [f"{e['path']} (manifest entry; archive is missing)" for e in missing]
    plan = plan_retention(present + new_entries, now, Policy.of(config))
    report.deleted = [
        {"filename": e["filename"], "path": e["path"], "tier": e["tier"], "reason": why} for e, why in plan
    ]
    report.kept = len(present) + len(new_entries) - len(plan)

    # orphans: sidecars without an archive, and partial files left by dead processes (we hold
    # the run lock, so no live process of this project is writing one)
    for tier in tiers:
        d = lay.tier_dir(tier)
        if not d.is_dir():
            continue
        for n in os.listdir(d):
            if n.endswith(layout.SIDECAR_SUFFIX):
                a = layout.parse(n[: -len(layout.SIDECAR_SUFFIX)])
                if a and a.project == config.project and not (d / a.filename).exists():
                    report.cleaned.append(f"{tier}/{n} (checksum file without archive)")
            elif n.endswith(layout.PARTIAL_SUFFIX):
                a = layout.parse(n[: -len(layout.PARTIAL_SUFFIX)])
                if a and a.project == config.project:
                    report.cleaned.append(f"{tier}/{n} (unfinished archive of a dead process)")
    if dry_run:
        return report

    doomed = {e["path"] for e, _ in plan} | {e["path"] for e in missing}

    def fn(es: list[Entry]) -> None:
        known = {e["path"] for e in es}
        es.extend(e for e in new_entries if e["path"] not in known)
        es[:] = [e for e in es if not (e.get("project") == config.project and e["path"] in doomed)]

    # manifest first: a crash after this leaves an untracked file (adopted next time, or deleted
    # again), never an entry that points at nothing
    manifest.update(fn)
    for e, _ in plan:
        doomed_path = bdir / e["path"]
        remove_quietly(doomed_path)
        remove_quietly(layout.sidecar_path(doomed_path))
    for c in report.cleaned:
        rel = c.split(" (", 1)[0]
        if c.endswith("(manifest entry; archive is missing)"):
            remove_quietly(layout.sidecar_path(bdir / rel))
        else:
            remove_quietly(bdir / rel)
    for e, why in plan:
        log.info("deleted %s: %s", e["path"], why)
    return report
