"""The manifest and retention.

``{backup_dir}/manifest.json`` holds one entry per archive (per tier). It is shared by every project
that uses the backup directory; each operation only reads and changes its own project's entries.
Writers hold an fcntl lock on ``.manifest.lock`` and replace the file atomically, so readers never
need a lock and never see half a file. A missing or unreadable manifest is rebuilt from the
archives, their ``.sha256`` files and their embedded JSON; an unreadable one is kept aside as
``manifest.json.corrupt-<time>``, never silently emptied.
"""

from __future__ import annotations

import calendar
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from . import naming
from .archive import read_meta, read_sidecar, sidecar_path
from .config import TIERS, BackupConfig
from .errors import BackupError
from .fsutil import atomic_write_json, file_lock, remove_quietly

log = logging.getLogger("gofr_backup")

MANIFEST_NAME = "manifest.json"
MANIFEST_LOCK = ".manifest.lock"
MANIFEST_FORMAT = 1
Entry = dict[str, Any]


class Manifest:
    def __init__(self, backup_dir: Path) -> None:
        self.dir = backup_dir
        self.path = backup_dir / MANIFEST_NAME
        self.lock_path = backup_dir / MANIFEST_LOCK

    # -- reading -------------------------------------------------------------------------------
    def _parse(self) -> list[Entry] | None:
        """Entries, or None when the file is missing. Raises ValueError when it is unreadable."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("backups"), list):
            raise ValueError("not a gofr-backup manifest (no 'backups' list)")
        entries = doc["backups"]
        for e in entries:
            if not isinstance(e, dict) or not all(
                isinstance(e.get(k), str) for k in ("filename", "tier", "path")
            ):
                raise ValueError("an entry lacks filename/tier/path")
            if not isinstance(e.get("created"), str):
                raise ValueError(f"entry {e.get('filename')!r} has no created time")
            datetime.fromisoformat(e["created"])
        return entries

    def read(self) -> list[Entry]:
        """Entries as they are on disk, without repairing anything (cheap; for status)."""
        try:
            return self._parse() or []
        except (ValueError, OSError):
            return []

    def load(self, project: str | None = None) -> list[Entry]:
        """Entries, rebuilding the manifest first if it is missing or unreadable."""
        try:
            entries = self._parse()
        except (ValueError, OSError):
            entries = None
        if entries is None:
            try:
                entries = self.update(lambda es: None)
            except (OSError, BackupError):  # a read-only backup volume: rebuild in memory only
                entries = rebuild_entries(self.dir)
        return [e for e in entries if project is None or e.get("project") == project]

    # -- writing -------------------------------------------------------------------------------
    def update(self, fn: Callable[[list[Entry]], None], timeout: float = 60.0) -> list[Entry]:
        """Read-modify-write under the manifest lock. ``fn`` mutates the list in place."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.lock_path, timeout, "the manifest lock"):
            try:
                entries = self._parse()
            except (ValueError, OSError) as e:
                aside = self.path.with_name(f"{MANIFEST_NAME}.corrupt-{datetime.now():%Y%m%d_%H%M%S}")
                os.replace(self.path, aside)
                log.warning(
                    "manifest %s is unreadable (%s); kept as %s and rebuilt from the archives",
                    self.path,
                    e,
                    aside.name,
                )
                entries = None
            if entries is None:
                entries = rebuild_entries(self.dir)
                if entries:
                    log.warning("manifest %s rebuilt from %d archive(s) on disk", self.path, len(entries))
            before = json.dumps(entries, sort_keys=True)
            fn(entries)
            if json.dumps(entries, sort_keys=True) != before or not self.path.exists():
                entries.sort(key=lambda e: (e.get("project", ""), e["tier"], e["created"], e["filename"]))
                atomic_write_json(
                    self.path,
                    {
                        "format": MANIFEST_FORMAT,
                        "updated": datetime.now().astimezone().isoformat(),
                        "backups": entries,
                    },
                )
            return entries

    def add(self, entry: Entry) -> None:
        def fn(es: list[Entry]) -> None:
            es[:] = [e for e in es if e["path"] != entry["path"]]
            es.append(entry)

        self.update(fn)

    def set_fields(self, rel_path: str, **fields: Any) -> None:
        def fn(es: list[Entry]) -> None:
            for e in es:
                if e["path"] == rel_path:
                    e.update(fields)

        self.update(fn)


def entry_from_archive(backup_dir: Path, archive: Path, meta: dict[str, Any] | None = None) -> Entry:
    """A manifest entry reconstructed from an archive on disk (for rebuilds and adoption)."""
    parsed = naming.parse(archive.name)
    assert parsed is not None
    if meta is None:
        try:
            meta = read_meta(archive)
        except BackupError:
            meta = {}
    created = meta.get("created")
    if not isinstance(created, str):
        created = datetime.strptime(parsed.ts, naming.TS_FORMAT).astimezone().isoformat()
    side = read_sidecar(archive)
    st = archive.stat()
    return {
        "project": parsed.project,
        "filename": archive.name,
        "path": str(archive.relative_to(backup_dir)),
        "tier": parsed.tier,
        "created": created,
        "size_bytes": st.st_size,
        "sha256": side or None,
        "compression": meta.get("compression") or _compression_of(parsed.suffix),
        "verified": None,
        "verified_at": None,
        "verify_error": None if meta else "archive header unreadable",
        "file_count": meta.get("file_count"),
        "source_bytes": meta.get("source_bytes"),
        "duration_s": None,
        "warnings": [],
        "complete": None,
        "trigger": "rebuilt",
    }


def _compression_of(suffix: str) -> str:
    from .codecs import SUFFIXES

    return SUFFIXES[suffix].name


def archives_on_disk(backup_dir: Path, project: str | None = None) -> list[Path]:
    out = []
    for tier in TIERS:
        d = backup_dir / tier
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for n in names:
            p = naming.parse(n)
            if p and p.tier == tier and (project is None or p.project == project):
                out.append(d / n)
    return sorted(out)


def rebuild_entries(backup_dir: Path) -> list[Entry]:
    return [entry_from_archive(backup_dir, a) for a in archives_on_disk(backup_dir)]


# -- retention -------------------------------------------------------------------------------------
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


def created_of(e: Entry) -> datetime:
    return datetime.fromisoformat(e["created"])


def failed(e: Entry) -> bool:
    """Known bad: failed verification, and not merely because its .sha256 file is damaged."""
    return e.get("verified") is False and not e.get("archive_intact")


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


def housekeeping(
    config: BackupConfig,
    now: datetime,
    tiers: Iterable[str] = TIERS,
    dry_run: bool = False,
) -> PruneReport:
    """Apply retention to this project's archives. The caller holds the project's run lock."""
    tiers = set(tiers)
    report = PruneReport(dry_run=dry_run)
    bdir = config.backup_dir
    manifest = Manifest(bdir)
    mine = manifest.load(config.project)
    tracked = {e["path"] for e in mine}

    # archives on disk that the manifest does not know (e.g. a crash between rename and manifest
    # update): adopt them, so that retention sees them.
    adopt = [
        a
        for a in archives_on_disk(bdir, config.project)
        if str(a.relative_to(bdir)) not in tracked and a.parent.name in tiers
    ]
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
        d = bdir / tier
        if not d.is_dir():
            continue
        for n in os.listdir(d):
            if n.endswith(naming.SIDECAR_SUFFIX):
                a = naming.parse(n[: -len(naming.SIDECAR_SUFFIX)])
                if a and a.project == config.project and not (d / a.filename).exists():
                    report.cleaned.append(f"{tier}/{n} (checksum file without archive)")
            elif n.endswith(naming.PARTIAL_SUFFIX):
                a = naming.parse(n[: -len(naming.PARTIAL_SUFFIX)])
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
        a = bdir / e["path"]
        remove_quietly(a)
        remove_quietly(sidecar_path(a))
    for c in report.cleaned:
        rel = c.split(" (", 1)[0]
        if c.endswith("(manifest entry; archive is missing)"):
            remove_quietly(sidecar_path(bdir / rel))
        else:
            remove_quietly(bdir / rel)
    for e, why in plan:
        log.info("deleted %s: %s", e["path"], why)
    return report
