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
        "last_drill": _newest(entries, st, "drill", "last_drill"),
        "next_drill": st.get("next_drill") if enabled and config.drill_schedule else None,
        "last_spot_check": _newest(entries, st, "spot_check", "last_spot_check"),
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
    reasons += _drill_reasons(config, st, report["last_drill"], entries, now)
    spot = report["last_spot_check"]
    if spot and not spot.get("ok"):
        reasons.append(
            f"the last source spot check ({spot.get('at')}, {spot.get('archive')}) failed: {spot.get('error')}"
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


def _newest(entries: list[Entry], st: dict[str, Any], key: str, state_key: str) -> dict[str, Any] | None:
    """The newest result of a kind (``drill`` or ``spot_check``): the state's, or an entry's."""
    cands = [e[key] for e in entries if isinstance(e.get(key), dict)]  # type: ignore[literal-required]
    if isinstance(st.get(state_key), dict):
        cands.append(st[state_key])
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
        out.append(
            f"the last restore drill ({last.get('at')}, {last.get('archive')}) failed: {last.get('error')}"
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
