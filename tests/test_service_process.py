"""The service and the lock as real processes: signals, disabled mode, concurrency, health."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gofrtest import SimClock, manifest, partials, popen_cli, run_cli, write

from gofr_common.backup import BackupConfig, BackupService
from gofr_common.backup.health import health
from gofr_common.backup.state import read_state


def _big(data: Path, mb: int = 32) -> None:
    for i in range(mb // 8):
        write(data / "storage" / "big" / f"blob{i}.bin", os.urandom(8 << 20))


def _wait(pred: Any, timeout: float = 60, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _partials(backups: Path) -> list[Path]:
    return list(partials(backups))


def test_sigterm_to_run_mid_backup_exits_0_within_10s_without_partial(app: dict[str, Any]) -> None:
    _big(app["data"])
    env = {**app["env"], "GOFR_PLOT_BACKUP_COMPRESSION": "xz"}
    proc = popen_cli("run", env=env)  # no backup yet: the service starts with a catch-up backup
    _wait(lambda: any(n > 65536 for n in partials(app["backups"]).values()), proc=proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, err
    assert elapsed < 10, elapsed
    assert _partials(app["backups"]) == []
    assert list((app["backups"] / "daily").glob("*.tar.xz")) == []
    assert manifest(app["backups"]) == []
    assert "catch-up" in out and "SIGTERM" in out and "service stopped" in out


def test_sigterm_while_idle_exits_at_once(app: dict[str, Any]) -> None:
    proc = popen_cli("run", env=app["env"])
    cfg = BackupConfig.from_env(env=app["env"])
    _wait(lambda: read_state(cfg).get("last_result") == "ok", proc=proc)  # the catch-up is done
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and time.monotonic() - t0 < 3
    assert "next backup at" in out
    assert len(manifest(app["backups"])) == 1  # the catch-up backup


def test_disabled_service_stays_up_and_healthy(app: dict[str, Any]) -> None:
    env = {**app["env"], "GOFR_PLOT_BACKUP_ENABLED": "false", "GOFR_BACKUP_LOG_FORMAT": "json"}
    proc = popen_cli("run", env=env)
    _wait(lambda: (app["backups"] / ".gofr-plot.state.json").exists(), proc=proc)
    time.sleep(1.0)
    assert proc.poll() is None, "a disabled service must stay up (restart: unless-stopped would loop)"
    st = run_cli("status", "--json", env=env)
    assert st.returncode == 0, st.stdout
    assert json.loads(st.stdout)["enabled"] is False
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in out.splitlines()]
    disabled = next(x for x in lines if x["event"] == "service.disabled")
    assert "GOFR_PLOT_BACKUP_ENABLED=true" in disabled["message"]
    assert not (app["backups"] / "daily").exists()


def test_two_concurrent_nows_never_write_at_the_same_time(app: dict[str, Any]) -> None:
    _big(app["data"], 16)
    env = {**app["env"], "GOFR_PLOT_BACKUP_COMPRESSION": "gzip", "GOFR_PLOT_BACKUP_COMPRESSION_LEVEL": "9"}
    a = popen_cli("now", "--json", env=env)
    _wait(lambda: bool(_partials(app["backups"])), proc=a)
    b = popen_cli("now", "--json", env=env)
    # while a is writing, b must wait: never two partials at once
    max_partials = 0
    while a.poll() is None or b.poll() is None:
        max_partials = max(max_partials, len(_partials(app["backups"])))
        time.sleep(0.01)
    ea, eb = (json.loads(p.communicate()[0]) for p in (a, b))
    assert a.returncode == 0 and b.returncode == 0
    assert max_partials == 1
    ta = datetime.fromisoformat(ea["created"])
    tb = datetime.fromisoformat(eb["created"])
    assert tb >= ta + timedelta(seconds=ea["duration_s"]), "b started writing before a finished"


WAITED = "another gofr-backup run holds the lock; waiting"


def test_lock_timeout_gives_a_clear_error(app: dict[str, Any]) -> None:
    _big(app["data"], 16)
    env = {**app["env"], "GOFR_PLOT_BACKUP_COMPRESSION": "xz"}
    a = popen_cli("now", env=env)
    _wait(lambda: bool(_partials(app["backups"])), proc=a)
    r = run_cli("now", env={**env, "GOFR_PLOT_BACKUP_LOCK_TIMEOUT": "1"})
    a.kill()
    a.communicate()
    assert r.returncode == 1
    assert "another gofr-backup process" in r.stderr and "LOCK_TIMEOUT" in r.stderr
    assert WAITED in r.stderr  # (so that its absence below means something)
    # the lock died with its (killed) holder: the next run gets it at once, without waiting
    t0 = time.monotonic()
    ok = run_cli("now", env={**app["env"], "GOFR_PLOT_BACKUP_LOCK_TIMEOUT": "1"})
    elapsed = time.monotonic() - t0
    assert ok.returncode == 0, ok.stderr
    assert WAITED not in ok.stderr, ok.stderr
    assert elapsed < 30, f"the backup after the holder died took {elapsed:.0f}s"


def test_status_flips_unhealthy_on_failure_and_back(app: dict[str, Any]) -> None:
    env = app["env"]
    app["backups"].mkdir()  # the backup volume is mounted (a missing one is a usage error, exit 2)
    r = run_cli("status", env=env)
    assert r.returncode == 1 and "never" in r.stdout  # nothing has ever succeeded
    assert run_cli("now", env=env).returncode == 0
    r = run_cli("status", "--json", env=env)
    assert r.returncode == 0, r.stdout
    doc = json.loads(r.stdout)
    assert doc["healthy"] and doc["last_success"]["filename"].startswith("gofr-plot_daily_")
    assert doc["tiers"]["daily"]["count"] == 1
    bad = {**env, "GOFR_PLOT_BACKUP_PATHS": "x:missing-dir"}
    assert run_cli("now", env=bad).returncode == 1
    r = run_cli("status", "--json", env=env)
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and not doc["healthy"]
    assert "No data found" in doc["last_failure"]["error"]
    assert run_cli("now", env=env).returncode == 0
    assert run_cli("status", env=env).returncode == 0


def test_status_goes_stale_after_two_intervals(app: dict[str, Any]) -> None:
    cfg = BackupConfig.from_env(env={**app["env"], "GOFR_PLOT_BACKUP_SCHEDULE": "0 */6 * * *"})
    t0 = datetime(2026, 7, 1, 6, 0, tzinfo=UTC)
    svc = BackupService(cfg, clock=SimClock(t0, t0 + timedelta(minutes=1)))  # type: ignore[arg-type]
    svc.start()  # one catch-up backup at t0
    assert health(cfg, t0 + timedelta(hours=11)).healthy
    h = health(cfg, t0 + timedelta(hours=12, minutes=1))
    assert not h.healthy and "more than two schedule intervals" in h.reasons[0]


def test_status_unhealthy_when_never_succeeded_after_an_interval(app: dict[str, Any]) -> None:
    cfg = BackupConfig.from_env(env={**app["env"], "GOFR_PLOT_BACKUP_PATHS": "x:missing"})
    t0 = datetime(2026, 7, 1, 6, 30, tzinfo=UTC)
    BackupService(cfg, clock=SimClock(t0, t0 + timedelta(minutes=1))).start()  # type: ignore[arg-type]
    h = health(cfg, t0 + timedelta(minutes=2))
    assert not h.healthy and "failed" in h.reasons[0]
    assert h.report["next_run"] is not None and h.report["last_success"] is None


def test_json_logs_one_object_per_line(app: dict[str, Any]) -> None:
    r = run_cli("now", env={**app["env"], "GOFR_BACKUP_LOG_FORMAT": "json"})
    events = [json.loads(line)["event"] for line in r.stderr.splitlines()]
    assert events[:1] == ["backup.start"] and "backup.verified" in events and events[-1] == "backup.done"
    done = json.loads(r.stderr.splitlines()[-1])
    assert done["size_bytes"] > 0 and done["verified"] is True
