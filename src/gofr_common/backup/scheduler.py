"""The service loop: when to run. Each run itself is run.py's business.

On start: record the state (pid, next run), housekeeping (CLEANUP_ON_START), one catch-up backup if
the last scheduled one was missed; then sleep until each scheduled time and run: a backup at each
SCHEDULE time, a restore drill at each DRILL_SCHEDULE time (when both fall on one instant, the
backup first, so that the drill restores it). All waiting is done in UTC (see schedule.Clock);
SIGTERM/SIGINT stop the loop, and a running backup or drill, promptly.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .config import BackupConfig
from .errors import BackupError
from .log import event
from .manifest import Manifest, has_valid_time
from .observe import Observer
from .retention import PruneReport
from .run import Outcome, failure_text
from .schedule import Clock, next_run, now_iso, prev_run
from .state import SCHEDULED, read_state, update_state


@dataclass
class Scheduler:
    config: BackupConfig
    clock: Clock
    manifest: Manifest
    stop_event: threading.Event
    backup: Callable[[str], Outcome]  # trigger -> outcome of one daily backup
    prune: Callable[[], PruneReport]
    observer: Observer | None = None  # metrics listener on start; wakes up to notice stale backups
    recover: Callable[[], list[str]] | None = None  # finish a restore that died (swap.py)
    drill: Callable[[], Any] | None = None  # one scheduled restore drill (DRILL_SCHEDULE)
    drill_start: Callable[[], Any] | None = None  # on start: what a drill that died left behind

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            event("service.signal", f"received {signal.Signals(signum).name}; stopping")
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def start(self, max_runs: int | None = None) -> int:
        """Run until SIGTERM/SIGINT (or ``max_runs`` scheduled runs, for tests). Returns 0."""
        c = self.config
        now = self.clock.now()
        event("service.start", "gofr-backup service starting", **c.log_fields())
        for var in c.unknown_variables:
            event("config.unknown", f"{var} is not a known variable (typo?); ignored", level=logging.WARNING)

        def started(st: dict[str, Any]) -> None:
            st.update(
                pid=os.getpid(),
                started_at=now_iso(now),
                enabled=c.enabled,
                schedule=c.schedule,
                next_run=None if not c.enabled else now_iso(next_run(c.schedule, now)),
            )

        self.keep_going("record the start in the state file", lambda: update_state(c, started))
        if self.drill_start is not None:
            self.keep_going("clean up after a restore drill that died", self.drill_start)
        if self.observer is not None:
            self.observer.service_started()
        # a restore that died is finished (or undone) first, whether or not backups are enabled
        if self.recover is not None:
            self.keep_going("finish a restore that died", self.finish_restores)
        if not c.enabled:
            event(
                "service.disabled",
                f"backups are disabled; set {c.prefix}ENABLED=true to turn them on. Idling.",
            )
            while not self.stop_event.wait(3600):
                pass
            return 0
        if c.cleanup_on_start:
            self.keep_going("run housekeeping on start", self.prune_on_start)
        if self.stop_event.is_set():
            return 0
        if self.keep_going("check for a missed run", lambda: self.missed_run(self.clock.now())):
            event("backup.catch_up", "the last scheduled backup was missed; running one catch-up backup now")
            self.backup("catch-up")
        runs = 0
        drills = c.drill_schedule if self.drill is not None else ""
        nxt = _after(c.schedule, self.clock.now(), None)
        nxt_drill = _after(drills, self.clock.now(), None) if drills else None
        wait = self.observer.wait_until if self.observer is not None else self.clock.wait_until
        while not self.stop_event.is_set():
            self.keep_going("record the next run", lambda: self.record_next_run(nxt, nxt_drill))  # noqa: B023
            event("schedule.next", f"next backup at {now_iso(nxt)}", next_run=now_iso(nxt))
            if nxt_drill is not None:
                event(
                    "schedule.next_drill",
                    f"next restore drill at {now_iso(nxt_drill)}",
                    next_drill=now_iso(nxt_drill),
                )
            drill_first = nxt_drill is not None and _utc(nxt_drill) < _utc(nxt)
            when = nxt_drill if drill_first and nxt_drill is not None else nxt
            if wait(when, self.stop_event):
                break
            if not drill_first:
                self.backup("schedule")
                runs += 1
                nxt = _after(c.schedule, self.clock.now(), nxt)
            if nxt_drill is not None and _utc(nxt_drill) <= _utc(when) and not self.stop_event.is_set():
                assert self.drill is not None
                self.keep_going("run the restore drill", self.drill)
                nxt_drill = _after(drills, self.clock.now(), nxt_drill)
            if max_runs is not None and runs >= max_runs:
                break
        event("service.stop", "gofr-backup service stopped")
        return 0

    def keep_going(self, what: str, fn: Callable[[], Any]) -> Any:
        """The service's own bookkeeping must never end the service (a restart loop under
        `restart: unless-stopped`): a failure is logged, and the loop goes on."""
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            event("service.error", f"could not {what}: {failure_text(e)}", level=logging.ERROR)
            event("service.traceback", traceback.format_exc(), level=logging.DEBUG)
            return None

    def finish_restores(self) -> None:
        """A restore that died is finished (or undone). When that cannot be done here (a read-only
        data volume), it is recorded so that `status` says so until it is done."""
        assert self.recover is not None
        try:
            for line in self.recover():
                event("restore.recovered", line, level=logging.WARNING)
        except (BackupError, OSError) as e:
            msg = (
                f"a restore that died could not be finished here ({e}); run the same restore again "
                "(scripts/backup/restore_backup.sh) to finish it"
            )
            event("restore.pending", msg, level=logging.ERROR)
            t = now_iso(self.clock.now())
            update_state(self.config, lambda st: st.update(restore_pending={"time": t, "error": msg}))
            return
        update_state(self.config, lambda st: st.pop("restore_pending", None))

    def prune_on_start(self) -> None:
        r = self.prune()
        event("housekeeping.start", f"housekeeping on start: {len(r.deleted)} deleted, {r.kept} kept")

    def record_next_run(self, nxt: datetime, nxt_drill: datetime | None = None) -> None:
        update_state(
            self.config,
            lambda st: st.update(next_run=now_iso(nxt), next_drill=now_iso(nxt_drill) if nxt_drill else None),
        )

    def missed_run(self, now: datetime) -> bool:
        """True when no scheduled backup has succeeded since the last time the schedule fired."""
        last = read_state(self.config).get("last_scheduled_success")
        if not last:
            cands = [
                e["created"]
                for e in self.manifest.read()
                if e.get("project") == self.config.project
                and e["tier"] == "daily"
                and e.get("trigger") in SCHEDULED
                and e.get("verified") is not False
            ]
            last = max(cands, default=None)
        if not last or not has_valid_time({"created": last}):
            return True
        return datetime.fromisoformat(last) < prev_run(self.config.schedule, now)


def _utc(t: datetime) -> datetime:
    return t.astimezone(UTC)


def _after(schedule: str, now: datetime, last: datetime | None) -> datetime:
    """The schedule's next time after ``now``, never ``last`` again (a run that took no time, as in
    a simulation, would otherwise fire twice at one instant)."""
    nxt = next_run(schedule, now)
    if last is not None and _utc(nxt) <= _utc(last):
        nxt = next_run(schedule, last + timedelta(seconds=1))
    return nxt
