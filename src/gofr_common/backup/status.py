"""Service state and health.

The state lives in ``{backup_dir}/.gofr-{project}.state.json`` (beside the manifest), written
atomically. ``gofr-backup status`` reads it and the manifest, and never opens an archive, because
it is the container's HEALTHCHECK.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .config import TIERS, BackupConfig
from .fsutil import atomic_write_json, file_lock


def state_path(config: BackupConfig) -> Path:
    return config.backup_dir / f".gofr-{config.project}.state.json"


def read_state(config: BackupConfig) -> dict[str, Any]:
    try:
        d = json.loads(state_path(config).read_bytes())
        return d if isinstance(d, dict) else {"corrupt": "state file is not a JSON object"}
    except FileNotFoundError:
        return {}
    except (ValueError, OSError) as e:
        return {"corrupt": f"state file unreadable: {e}"}


def update_state(config: BackupConfig, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    config.backup_dir.mkdir(parents=True, exist_ok=True)
    p = state_path(config)
    with file_lock(p.with_name(p.name + ".lock"), 30, "the state lock"):
        st = read_state(config)
        st.pop("corrupt", None)
        st["project"] = config.project
        fn(st)
        atomic_write_json(p, st)
        return st


def now_iso(now: datetime) -> str:
    return now.isoformat(timespec="seconds")


# -- schedule --------------------------------------------------------------------------------------
def next_run(schedule: str, now: datetime) -> datetime:
    from croniter import croniter

    return croniter(schedule, now).get_next(datetime)


def prev_run(schedule: str, now: datetime) -> datetime:
    from croniter import croniter

    return croniter(schedule, now).get_prev(datetime)


def interval(schedule: str, now: datetime) -> timedelta:
    """The gap between scheduled runs around ``now`` (the larger of the two neighbouring gaps)."""
    from croniter import croniter

    it = croniter(schedule, now)
    nxt = it.get_next(datetime)
    after = it.get_next(datetime)
    prev = croniter(schedule, now).get_prev(datetime)
    return max(after - nxt, nxt - prev)


# -- health ----------------------------------------------------------------------------------------
@dataclass
class Health:
    healthy: bool
    reasons: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


def tier_summary(entries: list[dict[str, Any]], backup_dir: Path) -> dict[str, Any]:
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
    from .housekeeping import Manifest

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
        reasons.append("the last backup was incomplete: some files could not be read (see last_warnings)")
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
