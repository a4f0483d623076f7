"""The real service loop, driven through 400 simulated days by an injected clock (no sleeping).

After every run, the archives on disk must equal a set this test derives on its own from the list
of run times: a 40-day outage in the middle must not cost the last good backup, and must be
followed by exactly one catch-up run.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from croniter import croniter
from dateutil.relativedelta import relativedelta
from gofrtest import SimClock, write

from gofr_common.backup import BackupConfig, BackupService
from gofr_common.backup.manifest import Manifest

RETENTION_DAYS, MAX_COUNT, WEEKS, MONTHS = 10, 7, 5, 4


class RecordingClock(SimClock):
    """Checks the disk each time the service goes to sleep (i.e. after each run)."""

    def __init__(self, start: datetime, until: datetime, check: Any) -> None:
        super().__init__(start, until)
        self.check = check

    def wait_until(self, when: datetime, stop: Any) -> bool:
        self.check(self.t)
        return super().wait_until(when, stop)


def expected(runs: list[datetime], now: datetime) -> dict[str, set[str]]:
    """Which archives should exist at `now`, from first principles."""
    done = [r for r in runs if r <= now]
    daily = [r for r in done if r >= now - timedelta(days=RETENTION_DAYS)] or done[-1:]
    daily = daily[-MAX_COUNT:]
    first_of_week: dict[tuple[int, int], datetime] = {}
    first_of_month: dict[tuple[int, int], datetime] = {}
    for r in done:
        first_of_week.setdefault(r.isocalendar()[:2], r)
        first_of_month.setdefault((r.year, r.month), r)
    weekly = sorted(first_of_week.values())
    weekly = [r for r in weekly if r >= now - timedelta(weeks=WEEKS)] or weekly[-1:]
    monthly = sorted(first_of_month.values())
    monthly = [r for r in monthly if r >= now - relativedelta(months=MONTHS)] or monthly[-1:]

    def names(tier: str, rs: list[datetime]) -> set[str]:
        return {f"gofr-sim_{tier}_{r:%Y%m%d_%H%M%S}.tar.gz" for r in rs}

    return {
        "daily": names("daily", daily),
        "weekly": names("weekly", weekly),
        "monthly": names("monthly", monthly),
    }


def on_disk(backups: Path) -> dict[str, set[str]]:
    out = {}
    for tier in ("daily", "weekly", "monthly"):
        d = backups / tier
        out[tier] = {n for n in os.listdir(d) if n.endswith(".tar.gz")} if d.is_dir() else set()
    return out


def test_400_days_with_weekly_and_monthly_and_an_outage(tmp_path: Path) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "f.txt", "hello")
    env = {
        "GOFR_PROJECT": "sim",
        "GOFR_SIM_BACKUP_DATA_DIR": str(data),
        "GOFR_SIM_BACKUP_DIR": str(backups),
        "GOFR_SIM_BACKUP_REPORT_FILE": "off",  # 400 reports would double this test's time (test_report.py)
        "GOFR_SIM_BACKUP_PATHS": "storage:storage",
        "GOFR_SIM_BACKUP_SCHEDULE": "0 2 * * *",
        "GOFR_SIM_BACKUP_RETENTION_DAYS": str(RETENTION_DAYS),
        "GOFR_SIM_BACKUP_MAX_COUNT": str(MAX_COUNT),
        "GOFR_SIM_BACKUP_ENABLE_WEEKLY": "true",
        "GOFR_SIM_BACKUP_WEEKLY_RETENTION_WEEKS": str(WEEKS),
        "GOFR_SIM_BACKUP_ENABLE_MONTHLY": "true",
        "GOFR_SIM_BACKUP_MONTHLY_RETENTION_MONTHS": str(MONTHS),
        "GOFR_SIM_BACKUP_COMPRESSION_LEVEL": "1",
        # the disk is checked each time the service goes to sleep, which is after each backup only
        # when there are no drills to wake up for (test_drill.py simulates the drill schedule)
        "GOFR_SIM_BACKUP_DRILL_SCHEDULE": "",
    }
    cfg = BackupConfig.from_env(env=env)
    start = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    outage_from = start + timedelta(days=200, hours=12)  # the service stops mid-day ...
    back_at = outage_from + timedelta(days=40, hours=8)  # ... and comes back 40 days later
    end = start + timedelta(days=400)

    # run times: a catch-up at each start (no scheduled backup since the schedule last fired),
    # then every 02:00 while the service is up
    def cron_times(a: datetime, b: datetime) -> list[datetime]:
        it, out = croniter("0 2 * * *", a), []
        while (t := it.get_next(datetime)) <= b:
            out.append(t)
        return out

    runs = [start, *cron_times(start, outage_from), back_at, *cron_times(back_at, end)]
    checks = {"n": 0}

    def check(now: datetime) -> None:
        assert on_disk(backups) == expected(runs, now), now
        checks["n"] += 1

    # phase 1: 200 days
    svc = BackupService(cfg, clock=RecordingClock(start, outage_from, check))  # type: ignore[arg-type]
    assert svc.start() == 0
    last_good = max(on_disk(backups)["daily"])

    # the outage is over: housekeeping on start must keep the last good backup, although it is
    # 40 days older than RETENTION_DAYS allows
    clock = RecordingClock(back_at, end, check)
    svc = BackupService(cfg, clock=clock)  # type: ignore[arg-type]
    report = svc.prune()
    assert last_good in on_disk(backups)["daily"], report.to_dict()
    assert len(on_disk(backups)["daily"]) == 1

    # phase 2: catch-up once (not 40 missed runs), then 160 more days
    assert svc.start() == 0
    assert checks["n"] == len(runs)  # the disk was checked after every single run
    entries = [e for e in Manifest(backups).read() if e["tier"] == "daily"]
    assert sum(1 for e in entries if e["trigger"] == "catch-up") <= 1
    assert all(e["verified"] is True for e in Manifest(backups).read())
    # weekly/monthly copies are hard links of their daily archive while both exist
    for w in on_disk(backups)["weekly"]:
        d = backups / "daily" / w.replace("_weekly_", "_daily_")
        if d.exists():
            assert os.path.samefile(d, backups / "weekly" / w)
    # no orphans
    for tier in ("daily", "weekly", "monthly"):
        for n in os.listdir(backups / tier):
            assert n.endswith(".tar.gz") or (n.endswith(".sha256") and (backups / tier / n[:-7]).exists())


def test_no_catch_up_when_the_last_scheduled_run_succeeded(tmp_path: Path) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "f.txt", "hello")
    env = {
        "GOFR_PROJECT": "sim",
        "GOFR_SIM_BACKUP_DATA_DIR": str(data),
        "GOFR_SIM_BACKUP_DIR": str(backups),
        "GOFR_SIM_BACKUP_PATHS": "storage:storage",
    }
    cfg = BackupConfig.from_env(env=env)
    t0 = datetime(2026, 5, 1, 1, 0, tzinfo=UTC)
    # first start: catch-up (nothing yet), then the 02:00 run
    BackupService(cfg, clock=SimClock(t0, t0 + timedelta(hours=2))).start()  # type: ignore[arg-type]
    assert len(on_disk(backups)["daily"]) == 2
    # restart at 09:00 the same day: the 02:00 run happened, so nothing to catch up
    clock = SimClock(t0 + timedelta(hours=8), t0 + timedelta(hours=9))
    BackupService(cfg, clock=clock).start()  # type: ignore[arg-type]
    assert len(on_disk(backups)["daily"]) == 2
    # restart two days later: exactly one catch-up
    clock = SimClock(t0 + timedelta(days=2, hours=8), t0 + timedelta(days=2, hours=9))
    BackupService(cfg, clock=clock).start()  # type: ignore[arg-type]
    assert len(on_disk(backups)["daily"]) == 3
    triggers = sorted(e["trigger"] for e in Manifest(backups).read())
    assert triggers == ["catch-up", "catch-up", "schedule"]


def test_dst_transitions_follow_croniter_and_never_burst(tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Berlin")  # 2026-03-29 02:30 does not exist; 2026-10-25 02:30 happens twice
    got = {}
    for season, start in (
        ("spring", datetime(2026, 3, 26, 12, 0, tzinfo=tz)),
        ("fall", datetime(2026, 10, 22, 12, 0, tzinfo=tz)),
    ):
        data, backups = tmp_path / season / "data", tmp_path / season / "backups"
        write(data / "storage" / "f.txt", "hello")
        env = {
            "GOFR_PROJECT": "sim",
            "GOFR_SIM_BACKUP_DATA_DIR": str(data),
            "GOFR_SIM_BACKUP_DIR": str(backups),
            "GOFR_SIM_BACKUP_PATHS": "storage:storage",
            "GOFR_SIM_BACKUP_SCHEDULE": "30 2 * * *",
            "GOFR_SIM_BACKUP_COMPRESSION_LEVEL": "1",
        }
        clock = SimClock(start, start + timedelta(days=6))
        BackupService(BackupConfig.from_env(env=env), clock=clock).start()  # type: ignore[arg-type]
        got[season] = sorted(n.split("_", 2)[2].split(".")[0] for n in on_disk(backups)["daily"])
    # croniter's definition: a skipped 02:30 runs at 03:00; a repeated one runs twice, an hour apart
    assert got["spring"] == [
        "20260326_120000",
        "20260327_023000",
        "20260328_023000",
        "20260329_030000",
        "20260330_023000",
        "20260331_023000",
        "20260401_023000",
    ]
    assert got["fall"] == [
        "20261022_120000",
        "20261023_023000",
        "20261024_023000",
        "20261025_023000",
        "20261025_023000_1",
        "20261026_023000",
        "20261027_023000",
        "20261028_023000",
    ]
