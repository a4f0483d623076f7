"""Prometheus metrics (prometheus-client), from the manifest entries and the state file.

Three ways out, one exposition: the node_exporter textfile (METRICS_FILE, written atomically after
every run), the service's HTTP listener (METRICS_ADDR), and ``gofr-backup metrics``. Every value
is read from disk when it is asked for, so a scrape always sees what ``status`` sees.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import BackupConfig
from .layout import TIERS

PREFIX = "gofr_backup_"
STATUSES = ("ok", "incomplete", "failed")
_UNREADABLE_RE = re.compile(r"^(\d+) path\(s\) could not be read")


def entries_of(config: BackupConfig) -> list[dict[str, Any]]:
    """The project's manifest entries as plain dicts, as they are on disk (nothing repaired)."""
    from .manifest import Manifest

    return [dict(e) for e in Manifest(config.backup_dir).read() if e.get("project") == config.project]


def ts(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return None


def good(e: dict[str, Any]) -> bool:
    return e.get("verified") is not False and e.get("complete") is not False


def newest(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(entries, key=lambda e: str(e.get("created")), default=None)


def unreadable_count(e: dict[str, Any]) -> int:
    if isinstance(e.get("unreadable"), list):
        return len(e["unreadable"])
    if e.get("complete") is not False:
        return 0
    for w in e.get("warnings") or []:
        m = _UNREADABLE_RE.match(str(w))
        if m:
            return int(m.group(1))
    return 1  # incomplete, count unknown: at least one


def drills(entries: list[dict[str, Any]], state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every drill result known: the state's last one and those recorded in entries, oldest first."""
    out = [e["drill"] for e in entries if isinstance(e.get("drill"), dict) and e["drill"].get("at")]
    last = state.get("last_drill")
    if isinstance(last, dict) and last.get("at") and last not in out:
        out.append(last)
    return sorted(out, key=lambda d: ts(d.get("at")) or 0.0)


def values(
    config: BackupConfig, entries: list[dict[str, Any]], state: dict[str, Any], healthy: bool
) -> dict[str, Any]:
    """What the metrics say, as plain numbers (None: not known, the series is left out)."""
    mine = [e for e in entries if e.get("project") == config.project]
    last = newest(mine)
    ok_newest = newest([e for e in mine if good(e)])
    success = ts((state.get("last_success") or {}).get("time")) or ts(
        ok_newest["created"] if ok_newest else None
    )
    ds = drills(mine, state)
    ok_drills = [d for d in ds if d.get("ok")]
    return {
        "last_success": success or 0.0,
        "last_attempt": ts(state.get("last_run")) or 0.0,
        "last_status": state.get("last_result"),
        "duration": last.get("duration_s") if last else None,
        "size": last.get("size_bytes") if last else None,
        "source": last.get("source_bytes") if last else None,
        "files": last.get("file_count") if last else None,
        "archives": {t: sum(1 for e in mine if e.get("tier") == t) for t in TIERS},
        "verify_failures": int(state.get("verify_failures_total") or 0),
        "drill_last": ts(ds[-1].get("at")) if ds else None,
        "drill_last_success": ts(ok_drills[-1].get("at")) if ok_drills else None,
        "restore_seconds": ok_drills[-1].get("restore_seconds") if ok_drills else None,
        "remote_last_success": (ts(state.get("remote_last_success")) or 0.0) if config.remote else None,
        "remote_broken": (
            len((state.get("remote_broken") or {}).get("broken") or [])
            + len((state.get("remote_broken") or {}).get("lost") or [])
            if config.remote
            else None
        ),
        "unreadable": unreadable_count(last) if last else None,
        "healthy": 1.0 if healthy else 0.0,
    }


def families(v: dict[str, Any], project: str) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def gauge(name: str, doc: str, value: Any) -> Iterator[Any]:
        if value is None:
            return
        g = GaugeMetricFamily(PREFIX + name, doc, labels=["project"])
        g.add_metric([project], float(value))
        yield g

    yield from gauge(
        "last_success_timestamp_seconds",
        "Unix time of the newest successful (complete, not failed) backup; 0: none yet.",
        v["last_success"],
    )
    yield from gauge(
        "last_attempt_timestamp_seconds",
        "Unix time the last backup run ended; 0: none yet.",
        v["last_attempt"],
    )
    st = GaugeMetricFamily(
        PREFIX + "last_status",
        "1 for the outcome of the last backup run (ok, incomplete, failed).",
        labels=["project", "status"],
    )
    for s in STATUSES:
        st.add_metric([project, s], 1.0 if v["last_status"] == s else 0.0)
    yield st
    yield from gauge("duration_seconds", "Seconds the newest archive took to write.", v["duration"])
    yield from gauge("archive_size_bytes", "Size of the newest archive on disk.", v["size"])
    yield from gauge("source_bytes", "Bytes of data in the newest archive, before compression.", v["source"])
    yield from gauge("files", "Files in the newest archive.", v["files"])
    a = GaugeMetricFamily(PREFIX + "archives", "Archives kept, per tier.", labels=["project", "tier"])
    for t, n in v["archives"].items():
        a.add_metric([project, t], float(n))
    yield a
    c = CounterMetricFamily(
        PREFIX + "verify_failures",
        "Verifications that failed, since the state file was created.",
        labels=["project"],
    )
    c.add_metric([project], float(v["verify_failures"]))
    yield c
    yield from gauge(
        "drill_last_timestamp_seconds",
        "Unix time of the last restore drill, whatever its result.",
        v["drill_last"],
    )
    yield from gauge(
        "drill_last_success_timestamp_seconds",
        "Unix time of the last successful restore drill.",
        v["drill_last_success"],
    )
    yield from gauge(
        "restore_seconds", "Seconds the last successful restore drill took.", v["restore_seconds"]
    )
    yield from gauge(
        "remote_last_success_timestamp_seconds",
        "Unix time of the last successful off-site upload; 0: none yet.",
        v["remote_last_success"],
    )
    yield from gauge(
        "remote_not_whole",
        "Restore points the last sync left on the remote that cannot be restored from it, plus archives "
        "it found gone from the bucket and could not upload again; 0: the remote is whole.",
        v["remote_broken"],
    )
    yield from gauge(
        "unreadable_files", "Paths the newest archive could not read (0: complete).", v["unreadable"]
    )
    yield from gauge("healthy", "1 when `gofr-backup status` is healthy, else 0.", v["healthy"])


class Collector:
    """A prometheus-client collector that reads the manifest and the state file on every scrape."""

    def __init__(self, config: BackupConfig, now: Callable[[], datetime]) -> None:
        self.config = config
        self.now = now

    def collect(self) -> Iterator[Any]:
        from .health import health
        from .state import read_state

        c = self.config
        entries = entries_of(c)
        yield from families(values(c, entries, read_state(c), health(c, self.now()).healthy), c.project)


def registry(config: BackupConfig, now: Callable[[], datetime]) -> Any:
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector(config, now))
    return reg


def exposition(config: BackupConfig, now: Callable[[], datetime]) -> bytes:
    from prometheus_client import generate_latest

    return bytes(generate_latest(registry(config, now)))


def write_textfile(config: BackupConfig, path: Path, now: Callable[[], datetime]) -> None:
    """Atomically (temp file + rename in the same directory), as node_exporter expects."""
    from .fsutil import atomic_write_bytes

    atomic_write_bytes(path, exposition(config, now))


def serve(config: BackupConfig, addr: tuple[str, int], now: Callable[[], datetime]) -> Any:
    """Start the /metrics listener in a daemon thread; returns the server. Raises OSError."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(addr[1], addr=addr[0], registry=registry(config, now))
    return server
