"""`status` is healthy only when a restorable backup exists now (issue 12, item 16): the newest
complete and verified archive is on disk with the size the manifest records (a stat, never a
read), it is younger than two schedule intervals, and the last scrub found nothing bad."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

from gofrtest import SimClock, cli_env, run_cli, write

from gofr_common.backup import BackupConfig, BackupService


def _env(tmp_path: Path) -> dict[str, str]:
    data = tmp_path / "data"
    write(data / "storage" / "blob.bin", os.urandom(50_000))
    return cli_env(data, tmp_path / "backups", **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})


def _status(env: dict[str, str]) -> tuple[int, dict[str, object]]:
    r = run_cli("status", "--json", env=env)
    return r.returncode, json.loads(r.stdout)


def test_status_is_unhealthy_when_every_archive_is_gone(tmp_path: Path) -> None:
    # issue 12 item 16: status trusted the state file alone
    env = _env(tmp_path)
    assert run_cli("now", env=env).returncode == 0
    assert _status(env)[0] == 0
    for p in (tmp_path / "backups" / "daily").iterdir():
        p.unlink()
    code, doc = _status(env)
    assert code == 1 and any("missing" in r for r in doc["reasons"]), doc  # type: ignore[attr-defined]


def test_status_is_unhealthy_when_the_archive_has_the_wrong_size(tmp_path: Path) -> None:
    # issue 12 item 16: a truncated archive is not a restorable backup
    env = _env(tmp_path)
    r = run_cli("now", "--json", env=env)
    a = tmp_path / "backups" / json.loads(r.stdout)["path"]
    with open(a, "r+b") as f:
        f.truncate(a.stat().st_size // 2)
    code, doc = _status(env)
    assert code == 1 and any("size" in r for r in doc["reasons"]), doc  # type: ignore[attr-defined]


def test_status_is_unhealthy_when_the_newest_restorable_archive_is_90_days_old(tmp_path: Path) -> None:
    # issue 12 item 16: the state file said "last success: today", the disk held a 90-day-old backup
    env = {**_env(tmp_path), "GOFR_PLOT_BACKUP_RETENTION_DAYS": "120"}  # the old one is kept
    cfg = BackupConfig.from_env(env=env)
    old = BackupService(cfg, clock=SimClock(datetime.now().astimezone() - timedelta(days=90)))  # type: ignore[arg-type]
    assert old.create_backup() is not None
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0
    (tmp_path / "backups" / json.loads(r.stdout)["path"]).unlink()  # deleted behind our back ...
    assert run_cli("prune", env=env).returncode == 0  # ... and its entry cleaned up
    code, doc = _status(env)
    assert code == 1, doc
    assert any("90" in r and "old" in r for r in doc["reasons"]), doc  # type: ignore[attr-defined]


def test_status_is_unhealthy_when_the_newest_archive_is_dated_in_the_future(tmp_path: Path) -> None:
    # issue 12 item 16, clock jumps: a clock that jumped back makes every age look fine
    env = _env(tmp_path)
    cfg = BackupConfig.from_env(env=env)
    ahead = BackupService(cfg, clock=SimClock(datetime.now().astimezone() + timedelta(days=30)))  # type: ignore[arg-type]
    assert ahead.create_backup() is not None
    code, doc = _status(env)
    assert code == 1 and any("future" in r for r in doc["reasons"]), doc  # type: ignore[attr-defined]
