"""Health: what ``gofr-backup status`` (the container's HEALTHCHECK) answers.

Cheap by design: it reads the state file and the manifest, stats the newest restorable archive
(and the failed ones still kept), and never opens an archive.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from . import chain
from .config import BackupConfig
from .layout import TIERS, entry_problem
from .manifest import Entry, Manifest, created_of, drill_failed, failed, unknown_completeness, unknown_hint
from .schedule import interval
from .state import dead_drill, dead_drill_error, read_state


@dataclass
class Health:
    healthy: bool
    reasons: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def tier_summary(entries: list[Entry], backup_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tier in TIERS:
        es = [e for e in entries if e["tier"] == tier]
        out[tier] = {
            "count": len(es),
            "size_bytes": sum(int(e.get("size_bytes") or 0) for e in es),
            "verified": sum(1 for e in es if e.get("verified") is True),
            "failed": sum(1 for e in es if e.get("verified") is False),
            "newest": max((e["created"] for e in es), default=None),
        }
    return out


def chain_problem(config: BackupConfig, entries: list[Entry], e: Entry, fulls: bool = False) -> str | None:
    """Why restore point ``e`` cannot be restored by the manifest's account (None: it can, as far
    as stats tell): its chain (chain.chain_of) is broken (a link missing from the manifest or from
    disk, replaced, failed verification, malformed), or an archive of the chain has another size on
    disk than the manifest records (truncated or replaced). One stat per archive of the chain,
    never a read: a flipped byte is found by verify and the scrub, which then mark it failed.
    A full is checked only when ``fulls`` (status judges a full's own state as it always did)."""
    if chain.kind_of(e) == chain.KIND_FULL and not fulls:
        return None  # a full needs nothing else; its own state is judged as it always was
    lay = config.layout
    c = chain.chain_of(entries, e, lay)
    if not c.ok:
        return c.broken
    return chain.size_problem(c.archives, lay)


def newest_daily(config: BackupConfig, entries: list[Entry]) -> Entry | None:
    """The newest archive of the daily tier (the one the next incremental would build on)."""
    es = [
        e
        for e in entries
        if e.get("project") == config.project
        and e.get("tier") == "daily"
        and entry_problem(e, config.project) is None
    ]
    return max(es, key=lambda e: (created_of(e), e["filename"]), default=None)


def restorable(config: BackupConfig, entries: list[Entry]) -> Entry | None:
    """The newest archive that is complete and verified (with VERIFY_AFTER_BACKUP=false: not
    known to be bad) and did not fail its last restore drill, going by the manifest alone."""
    ok = [
        e
        for e in entries
        if e.get("complete") is True  # None: not known (a rebuilt entry) until a verify reads it
        and not drill_failed(e)
        and (e.get("verified") is True or (not config.verify_after_backup and e.get("verified") is None))
    ]
    best = sorted(ok, key=lambda e: (created_of(e), e["tier"] == "daily"), reverse=True)
    # nothing later in a broken chain is restorable: the newest whose whole chain is there
    # ... and whose chain restores without --allow-incomplete (no earlier archive incomplete)
    return next(
        (
            e
            for e in best
            if chain_problem(config, entries, e) is None
            and not any(a.get("complete") is False for a in chain.chain_of(entries, e).archives[:-1])
        ),
        None,
    )


def health(config: BackupConfig, now: datetime) -> Health:
    """Healthy means a restorable backup exists now: the newest complete and verified archive is
    on disk with the size the manifest records (one stat, never a read), it is younger than two
    schedule intervals, and the last scrub found nothing bad; plus the last run did not fail."""
    st = read_state(config)
    manifest = Manifest(config.backup_dir)
    entries = [
        e
        for e in manifest.read()
        if e.get("project") == config.project and entry_problem(e, config.project) is None
    ]
    good = restorable(config, entries)
    enabled = st.get("enabled", config.enabled)
    reasons: list[str] = []
    last_success = st.get("last_success") or (
        {"time": good["created"], "filename": good["filename"], "size_bytes": good.get("size_bytes")}
        if good
        else None
    )
    report: dict[str, Any] = {
        "project": config.project,
        "enabled": enabled,
        "service_running": _pid_alive(st.get("pid")),
        "schedule": config.schedule,
        "next_run": st.get("next_run") if enabled else None,
        "last_success": last_success,
        "last_failure": st.get("last_failure"),
        "last_result": st.get("last_result"),
        "last_warnings": st.get("last_warnings", []),
        "restorable": {
            **{k: good.get(k) for k in ("filename", "path", "created", "size_bytes", "verified_at")},
            "kind": chain.kind_of(good),
            # the archives a restore of it extracts, full first (one for a full)
            "chain": [str(a.get("filename")) for a in chain.chain_of(entries, good).archives],
        }
        if good
        else None,
        "last_scrub": st.get("last_scrub"),
        "tiers": tier_summary(entries, config.backup_dir),
        "last_drill": _newest(entries, st, "drill", "last_drill"),
        "next_drill": st.get("next_drill") if enabled and config.drill_schedule else None,
        "last_spot_check": _newest(entries, st, "spot_check", "last_spot_check"),
    }
    if st.get("corrupt"):
        reasons.append(st["corrupt"])
    if manifest.read_error and (manifest.read_error != "missing" or st.get("last_success")):
        reasons.append(
            f"the manifest {manifest.path} is {manifest.read_error}: the next backup, prune or verify "
            "rebuilds it from the archives (`gofr-backup verify --all` does it now)"
        )
    if st.get("restore_pending"):  # the data may be half restored: louder than any backup news
        reasons.append(str(st["restore_pending"].get("error")))
    if not enabled:
        report["disabled_hint"] = f"set {config.prefix}ENABLED=true to turn backups on"
        return Health(not reasons, reasons, report)
    if st.get("last_result") == "failed":
        f = st.get("last_failure") or {}
        reasons.append(f"the last backup failed at {f.get('time')}: {f.get('error')}")
    if st.get("last_result") == "incomplete":
        unreadable = [w for w in st.get("last_warnings", []) if "could not be read" in w]
        reasons.append(
            "the last backup was incomplete: some files could not be read"
            + (f" ({unreadable[-1]})" if unreadable else "")
        )
    gap = interval(config.schedule, now)
    if config.remote is not None:
        rc = config.remote
        report["remote"] = {
            "url": rc.url,
            "last_success": st.get("remote_last_success"),
            "last_failure": st.get("remote_last_failure"),
            "count": st.get("remote_count"),
            "broken": st.get("remote_broken"),
        }
        rb = st.get("remote_broken")
        if rb:
            # the last sync left restore points on the remote that cannot be restored from it:
            # unhealthy at once (not after REMOTE_MAX_LAG), until a sync leaves the remote whole
            reasons.append(
                f"the off-site copy in {rc.url} is NOT whole since {rb.get('time')}: "
                + str(rb.get("error")).removeprefix("off-site copy NOT whole: ")
            )
        since = st.get("remote_last_success") or st.get("started_at")
        lag = rc.max_lag * gap
        if since is None or now - datetime.fromisoformat(since) > lag:
            f = st.get("remote_last_failure") or {}
            reasons.append(
                f"no successful upload to {rc.url} for more than {_human_td(lag)} "
                f"(REMOTE_MAX_LAG={rc.max_lag} intervals)" + (f"; last error: {f.get('error')}" if f else "")
            )
    reasons += _drill_reasons(config, st, report["last_drill"], entries, now)
    spot = report["last_spot_check"]
    if spot and not spot.get("ok"):
        reasons.append(
            f"the last source spot check ({spot.get('at')}, {spot.get('archive')}) failed: {spot.get('error')}"
        )
    if good is not None:
        reasons += _on_disk(config, good)
        age = now - created_of(good)
        if age > 2 * gap:
            reasons.append(
                f"the newest restorable backup ({good['filename']}) is {_human_td(age)} old, more than "
                f"two schedule intervals ({_human_td(2 * gap)})"
            )
        elif -age > gap:
            reasons.append(
                f"the newest restorable backup ({good['filename']}) is dated {_human_td(-age)} in the "
                "future: has the clock jumped back? Ages cannot be trusted until it is fixed"
            )
    elif entries or st.get("last_success"):
        why = _why_not_restorable(config, st.get("last_success"), entries, manifest.read_error)
        reasons.append("no complete and verified backup exists" + (f" ({why})" if why else ""))
    else:
        started = st.get("started_at")
        since = now - datetime.fromisoformat(started) if started else None
        if since is None or since > gap:
            reasons.append(
                "no backup has succeeded yet" + (f" in the {_human_td(since)} since start" if since else "")
            )
    reasons += _broken_chain(config, entries)
    reasons += _scrub_findings(st.get("last_scrub"))
    reasons += _failed_on_disk(config, entries)
    reasons += [
        f"{e['path']} failed its restore drill ({e['drill'].get('at')}): {e['drill'].get('error')}; "
        "restore --latest and status pass it over"
        for e in entries
        if drill_failed(e)
        and (good is None or created_of(e) > created_of(good))
        and os.path.lexists(config.layout.archive(e["path"]))
    ]
    return Health(not reasons, reasons, report)


def _why_not_restorable(
    config: BackupConfig, last: dict[str, Any] | None, entries: list[Entry], manifest_error: str | None
) -> str:
    """Why nothing is restorable, said of the last success when the state names one (it may be on
    disk, yet not restorable by the manifest's account), else of the archives of unknown
    completeness; "" when there is nothing more to say."""
    unknown = unknown_completeness(entries)
    if not last:
        return f"{unknown[0]['filename']}: {unknown_hint(unknown[:1])}" if unknown else ""
    name = last.get("filename")
    rel = last.get("path") or next((e["path"] for e in entries if e.get("filename") == name), None)
    if not (isinstance(rel, str) and os.path.lexists(config.layout.archive(rel))):
        more = f"; {unknown[0]['filename']}: {unknown_hint(unknown[:1])}" if unknown else ""
        return f"the last success, {name}, is gone{more}"
    e = next((e for e in entries if e["path"] == rel), None)
    said = f"the last success, {name}, is on disk but"
    if manifest_error:
        return f"{said} the manifest is {'missing' if manifest_error == 'missing' else 'unreadable'}"
    if e is None:
        return f"{said} not in the manifest (`gofr-backup prune` adopts it)"
    if failed(e):
        return f"{said} failed verification: {e.get('verify_error')}"
    if drill_failed(e):
        return f"{said} failed its restore drill"
    if e.get("complete") is None:
        return f"the last success, {name}, is on disk: {unknown_hint([e])}"
    if e.get("complete") is False:
        return f"{said} it is incomplete"
    return f"{said} not verified: run `gofr-backup verify --all`"


def _broken_chain(config: BackupConfig, entries: list[Entry]) -> list[str]:
    """The newest daily archive is an incremental whose chain is broken: that restore point (and
    every later one of the chain) cannot be restored; the next backup starts a new chain."""
    e = newest_daily(config, entries)
    if e is None or chain.kind_of(e) != chain.KIND_INCREMENTAL:
        return []
    why = chain_problem(config, entries, e)
    if why is None:
        return []
    return [
        f"the newest backup {e['filename']} cannot be restored, its chain is broken: {why}; "
        "the next backup starts a new chain with a full"
    ]


def _on_disk(config: BackupConfig, e: Entry) -> list[str]:
    """The archive is there, with the size the manifest records: one stat, never a read."""
    p = config.layout.archive(e["path"])
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return [f"the newest restorable backup {e['path']} is missing from disk"]
    except OSError as x:
        return [f"the newest restorable backup {e['path']} cannot be looked at: {x.strerror}"]
    if not stat.S_ISREG(st.st_mode):
        return [f"the newest restorable backup {e['path']} is not a regular file"]
    if e.get("size_bytes") is not None and st.st_size != e["size_bytes"]:
        return [
            f"the newest restorable backup {e['path']} has {st.st_size} bytes on disk, the manifest "
            f"records {e['size_bytes']}: size mismatch (truncated or replaced?)"
        ]
    return []


def _scrub_findings(scrub: Any) -> list[str]:
    if not isinstance(scrub, dict):
        return []
    out = [
        f"the last scrub ({scrub.get('time')}) found {b.get('filename')} bad: {b.get('error')}"
        for b in scrub.get("bad") or []
    ]
    out += [
        f"the last scrub ({scrub.get('time')}) could not read {b.get('filename')}: {b.get('error')}"
        for b in scrub.get("could_not_check") or []
    ]
    return out


def _failed_on_disk(config: BackupConfig, entries: list[Entry]) -> list[str]:
    """Archives known to be bad that are still there (the last of a tier is kept, flagged)."""
    out = []
    for e in entries:
        if failed(e) and os.path.lexists(config.layout.archive(e["path"])):
            out.append(f"{e['path']} failed verification ({e.get('verify_error')}); restore a newer one")
    return out


def _newest(entries: list[Entry], st: dict[str, Any], key: str, state_key: str) -> dict[str, Any] | None:
    """The newest result of a kind (``drill`` or ``spot_check``): the state's, or an entry's. The
    state's is the last one recorded: it wins a tie (times are to the second)."""
    cands = [st[state_key]] if isinstance(st.get(state_key), dict) else []
    cands += [e[key] for e in entries if isinstance(e.get(key), dict)]  # type: ignore[literal-required]
    cands = [c for c in cands if isinstance(c.get("at"), str)]
    return max(cands, key=lambda c: _ts(c["at"]), default=None)


def _ts(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0


def _drill_reasons(
    config: BackupConfig, st: dict[str, Any], last: dict[str, Any] | None, entries: list[Entry], now: datetime
) -> list[str]:
    out = []
    running = dead_drill(config, st)
    if running is not None:
        out.append(f"{dead_drill_error(running)}; run `gofr-backup drill`")
    if last and not last.get("ok"):
        how = "could not run" if last.get("checked") is False else "failed"
        out.append(
            f"the last restore drill ({last.get('at')}, {last.get('archive')}) {how}: {last.get('error')}"
        )
    if not config.drill_schedule:
        return out
    gap = interval(config.drill_schedule, now)
    passed = [
        _ts(d["at"])
        for d in [*(e.get("drill") for e in entries), st.get("last_drill")]
        if isinstance(d, dict) and d.get("ok") and isinstance(d.get("at"), str)
    ]
    if passed:
        age = now.timestamp() - max(passed)
        if age > 2 * gap.total_seconds():
            out.append(
                f"no restore drill has passed for {_human_td(timedelta(seconds=age))}, more than two drill "
                f"intervals ({_human_td(2 * gap)}; {config.prefix}DRILL_SCHEDULE)"
            )
    else:
        started = st.get("started_at")
        if started and now - datetime.fromisoformat(started) > 2 * gap:
            out.append(
                f"no restore drill has passed in the {_human_td(now - datetime.fromisoformat(started))} since "
                f"the service started, more than two drill intervals ({_human_td(2 * gap)}): run `gofr-backup drill`"
            )
    return out


def _pid_alive(pid: Any) -> bool | None:
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _human_td(td: timedelta) -> str:
    s = int(td.total_seconds())
    if s >= 86400:
        return f"{s / 86400:.1f}d"
    if s >= 3600:
        return f"{s / 3600:.1f}h"
    if s >= 60:
        return f"{s // 60}m"
    return f"{s}s"
