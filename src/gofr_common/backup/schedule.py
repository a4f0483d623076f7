"""Time: the local zone, an injectable clock, and cron arithmetic.

Kept apart from the service so that ``gofr-backup status`` (the container's HEALTHCHECK, every
60 s) can do its schedule maths without loading the service.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta, tzinfo


def local_tz() -> tzinfo:
    """The local zone with its DST rules (TZ honoured), not just today's UTC offset."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except OSError:
        return datetime.now().astimezone().tzinfo  # type: ignore[return-value]


class Clock:
    """Real time. Tests substitute one that jumps."""

    def __init__(self) -> None:
        self.tz = local_tz()

    def now(self) -> datetime:
        return datetime.now(self.tz)

    def wait_until(self, when: datetime, stop: threading.Event) -> bool:
        """Sleep until ``when``; True if ``stop`` was set first. Re-reads the clock each minute,
        so suspend/resume or clock steps do not make it oversleep."""
        while True:
            # in UTC: aware datetimes of one zone compare by wall time and ignore `fold`, which
            # would fire the second 02:30 of a DST fall-back night an hour early
            left = (when.astimezone(UTC) - self.now().astimezone(UTC)).total_seconds()
            if left <= 0:
                return stop.is_set()
            if stop.wait(min(left, 60.0)):
                return True


def now_iso(now: datetime) -> str:
    return now.isoformat(timespec="seconds")


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
