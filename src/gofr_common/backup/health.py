"""Health: what ``gofr-backup status`` (the container's HEALTHCHECK) answers.

Cheap by design: it reads the state file and the manifest and never opens an archive.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .config import BackupConfig
from .layout import TIERS
from .manifest import Entry, Manifest
from .schedule import interval
from .state import read_state


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


def health(config: BackupConfig, now: datetime) -> Health:
    st = read_state(config)
    entries = [e for e in Manifest(config.backup_dir).read() if e.get("project") == config.project]
    ok_entries = [e for e in entries if e.get("verified") is not False and e.get("complete") is not False]
    newest = max(ok_entries, key=lambda e: e["created"], default=None)
    enabled = st.get("enabled", config.enabled)
    reasons: list[str] = []
    last_success = st.get("last_success") or (
        {"time": newest["created"], "filename": newest["filename"], "size_bytes": newest.get("size_bytes")}
        if newest
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
        "tiers": tier_summary(entries, config.backup_dir),
    }
    if st.get("corrupt"):
        reasons.append(st["corrupt"])
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
        }
        since = st.get("remote_last_success") or st.get("started_at")
        lag = rc.max_lag * gap
        if since is None or now - datetime.fromisoformat(since) > lag:
            f = st.get("remote_last_failure") or {}
            reasons.append(
                f"no successful upload to {rc.url} for more than {_human_td(lag)} "
                f"(REMOTE_MAX_LAG={rc.max_lag} intervals)" + (f"; last error: {f.get('error')}" if f else "")
            )
    if last_success:
        age = now - datetime.fromisoformat(last_success["time"])
        if age > 2 * gap:
            reasons.append(
                f"the newest successful backup is {_human_td(age)} old, more than two schedule "
                f"intervals ({_human_td(2 * gap)})"
            )
    else:
        started = st.get("started_at")
        since = now - datetime.fromisoformat(started) if started else None
        if since is None or since > gap:
            reasons.append(
                "no backup has succeeded yet" + (f" in the {_human_td(since)} since start" if since else "")
            )
    return Health(not reasons, reasons, report)


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
