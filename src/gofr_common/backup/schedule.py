"""Time: the zone that ``TZ`` names, an injectable clock, and cron arithmetic.

Kept apart from the service so that ``gofr-backup status`` (the container's HEALTHCHECK, every
60 s) can do its schedule maths without loading the service. The zone logic lives here only:
configuration loading calls :func:`zone_from_tz` to refuse a ``TZ`` that names no zone (it used to
fall back to the system zone without a word), and the clock uses the same function.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta, tzinfo

from .errors import ConfigError

TZ_ALLOWED = (
    "expected an IANA time zone name such as Europe/Berlin or UTC (a leading ':' is allowed), "
    "or the absolute path of a zoneinfo file"
)


def zone_from_tz(value: str | None) -> tzinfo:
    """The zone ``TZ`` names, with its DST rules (not just today's UTC offset): an IANA name,
    optionally ``:``-prefixed, or the absolute path of a zoneinfo (TZif) file. Unset or empty:
    the system zone (``/etc/localtime``). Anything else raises ConfigError (exit 2)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = (value or "").strip().removeprefix(":")
    if not name:
        return system_tz()
    try:
        if name.startswith("/"):
            with open(name, "rb") as f:
                return ZoneInfo.from_file(f, key=name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(f"TZ={value!r} is not valid: {TZ_ALLOWED}") from None


def system_tz() -> tzinfo:
    from zoneinfo import ZoneInfo

    try:
        with open("/etc/localtime", "rb") as f:
            return ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return datetime.now().astimezone().tzinfo  # type: ignore[return-value]


def local_tz() -> tzinfo:
    """The zone of this process's ``TZ`` (see :func:`zone_from_tz`)."""
    return zone_from_tz(os.environ.get("TZ"))


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
