"""gofr-backup prune: what it removes and why, dry-run, orphans, failed archives first."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from gofrtest import SimClock, manifest, run_cli

from gofr_common.backup import BackupConfig, BackupService


def test_prune_dry_run_then_real(app: dict[str, Any]) -> None:
    env = {**app["env"], "GOFR_PLOT_BACKUP_RETENTION_DAYS": "5", "GOFR_PLOT_BACKUP_MAX_COUNT": "3"}
    cfg = BackupConfig.from_env(env=env)
    now = datetime.now().astimezone()
    clock = SimClock(now - timedelta(days=20))
    svc = BackupService(cfg, clock=clock)  # type: ignore[arg-type]
    for _ in range(20):  # one per day; each `now` prunes its tier as it goes
        assert svc.create_backup() is not None
        clock.advance(days=1)
    kept = [e["filename"] for e in manifest(app["backups"])]
    assert len(kept) == 3  # MAX_COUNT
    # damage the newest archive and add orphans
    newest = app["backups"] / "daily" / sorted(kept)[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    assert run_cli("verify", newest.name, env=env).returncode == 1
    (app["backups"] / "daily" / "gofr-plot_daily_20200101_000000.tar.gz.sha256").write_text("x")
    (app["backups"] / "daily" / "gofr-plot_daily_20200102_000000.tar.gz.partial").write_text("x")
    (app["backups"] / "daily" / "gofr-other_daily_20200102_000000.tar.gz.partial").write_text("other project")

    dry = run_cli("prune", "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True
    assert [d["filename"] for d in plan["deleted"]] == [newest.name]
    assert plan["deleted"][0]["reason"].startswith("failed verification: checksum mismatch")
    assert len(plan["cleaned"]) == 2
    assert newest.exists() and len(manifest(app["backups"])) == 3

    r = run_cli("prune", env=env)
    assert r.returncode == 0, r.stderr
    assert f"deleted daily/{newest.name}: failed verification" in r.stdout
    assert not newest.exists() and not newest.with_name(newest.name + ".sha256").exists()
    assert len(manifest(app["backups"])) == 2
    left = sorted(p.name for p in (app["backups"] / "daily").iterdir())
    assert "gofr-other_daily_20200102_000000.tar.gz.partial" in left  # another project's: untouched
    assert not any(
        "20200101" in n or n[-38:] == "20200102_000000.tar.gz.partial" and "plot" in n for n in left
    )


def test_prune_by_age_reports_the_limit(app: dict[str, Any]) -> None:
    # written under a 90-day policy, pruned under the default 30-day one
    cfg = BackupConfig.from_env(env={**app["env"], "GOFR_PLOT_BACKUP_RETENTION_DAYS": "90"})
    now = datetime.now().astimezone()
    clock = SimClock(now - timedelta(days=45))
    svc = BackupService(cfg, clock=clock)  # type: ignore[arg-type]
    svc.create_backup()
    clock.advance(days=44)
    svc.create_backup()
    r = run_cli("prune", env=app["env"])
    assert "older than the daily limit (RETENTION_DAYS=30)" in r.stdout
    assert "1 archive deleted, 1 kept" in r.stdout
