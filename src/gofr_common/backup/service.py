"""The Python API: everything the CLI can do, as methods of one object.

    service = BackupService(BackupConfig.from_env(project_name="plot"))
    service.run_backup("daily")                 # one run (run.py)
    service.verify(path)                        # verify one archive and record the result
    service.restore(RestoreRequest(latest=True))  # restore.py
    service.prune(dry_run=True)                 # retention.py
    service.sync_remote()                       # offsite.py
    service.drill()                             # restore drill of the newest archive (drill.py)
    service.check_source(sample_percent=5)      # source spot check (spot_check.py)
    service.start()                             # the scheduled service (scheduler.py)

Each method is thin wiring over the module that does the work. Time comes from an injectable
Clock (schedule.py), so the scheduler can be driven through months in a test without sleeping.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from . import drill as drills
from . import layout, sealed, spot_check
from .config import BackupConfig
from .errors import BackupError, Interrupted, LockTimeout, VerifyError
from .fsutil import run_lock
from .log import event
from .manifest import Manifest
from .observe import Observer
from .offsite import SyncReport, sync_and_record
from .restore import RestorePlan, RestoreRequest, recover_interrupted, recovery_dirs, run_restore
from .retention import PruneReport, prune
from .run import Outcome, Run
from .schedule import Clock, now_iso
from .scheduler import Scheduler
from .scrub import verdict_fields
from .swap import staging_dirs
from .verify import VerifyResult, verify_archive

__all__ = ["BackupService", "Clock", "Outcome"]


class BackupService:
    def __init__(self, config: BackupConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.stop_event = threading.Event()
        self.manifest = Manifest(config.backup_dir)
        self.log_failures = True  # the CLI prints failures itself
        self.observer = Observer(config, self.clock)  # pings, notifications, metrics, report

    def should_stop(self) -> bool:
        return self.stop_event.is_set()

    # -- backups -------------------------------------------------------------------------------
    def run_backup(self, tier: str = "daily", trigger: str = "manual") -> Outcome:
        run = Run(self.config, self.clock, self.manifest, self.should_stop, tier, trigger, self.log_failures)
        self.observer.run_started(tier, trigger)  # start ping
        out = run()
        self.observer.run_finished(out)  # end ping, notifications, metrics, report: bounded
        return out

    def create_backup(self, tier: str = "daily") -> Path | None:
        """One backup; the archive's path, or None if it failed (the error is logged)."""
        out = self.run_backup(tier=tier)
        return out.path if out.status in ("ok", "incomplete") else None

    # -- verification --------------------------------------------------------------------------
    def verify_backup(self, path: Path | str) -> bool:
        return self.verify(Path(path)).ok

    def verify(self, path: Path, identity: Path | None = None) -> VerifyResult:
        """Verify one archive (sealed ones too) and record the result in the manifest."""
        lay = self.config.layout
        try:
            rel = lay.rel(path if path.is_absolute() else path.resolve())
        except ValueError:
            rel = None
        entry = next((e for e in self.manifest.read() if e["path"] == rel), None) if rel else None
        expected = entry.get("sha256") if entry else None
        if layout.is_sealed(path.name):
            res = sealed.verify_sealed(
                path,
                expected,
                entry.get("plain_sha256") if entry else None,
                identity or self.config.identity_file,
                self.should_stop,
            )
        else:
            res = verify_archive(path, expected, should_stop=self.should_stop)
        if entry is not None and rel is not None:
            # could not check (EIO, out of memory): verified stays as it was, with a verify_error
            self.manifest.set_fields(rel, **verdict_fields(res, now_iso(self.clock.now()), entry))
        if res.checked:  # a read error is not a verification failure
            self.observer.verified(res.ok)
        return res

    def repair_sidecar(self, path: Path) -> None:
        """Rewrite ``path``'s missing or damaged ``.sha256`` from the manifest's checksum, only if
        the archive reads to its end and matches it. Raises BackupError otherwise."""
        lay = self.config.layout
        rel = lay.rel(path if path.is_absolute() else path.resolve())
        entry = next((e for e in self.manifest.read() if e["path"] == rel), None)
        expected = entry.get("sha256") if entry else None
        side = layout.sidecar_path(path).name
        if not expected:
            raise BackupError(
                f"cannot repair {side}: the manifest holds no checksum for {path.name}, so there is "
                "nothing to check the archive against"
            )
        if layout.is_sealed(path.name):
            sha = sealed.sha256_file(path)
            error = None if sha == expected else "it does not match the manifest's checksum"
        else:
            res = verify_archive(path, expected, sidecar=False, should_stop=self.should_stop)
            error = res.error
        if error:
            raise VerifyError(f"not repairing {side}: {path.name} is not sound: {error}")
        layout.write_sidecar(path, expected)
        self.manifest.set_fields(
            rel, verified=True, verified_at=now_iso(self.clock.now()), verify_error=None, archive_intact=True
        )

    def recover_restore(self) -> list[str]:
        """Finish (or undo) a restore that died (see swap.py); the service does it on start."""
        if not staging_dirs(recovery_dirs(self.config)):
            return []  # the common case: nothing to do, and no wait for the run lock
        with run_lock(self.config.layout, self.config.lock_timeout, self.should_stop, readonly_ok=True):
            return recover_interrupted(self.config)

    # -- restore, prune, off-site ----------------------------------------------------------------
    def restore(
        self, req: RestoreRequest, confirm: Callable[[RestorePlan], bool] = lambda p: True
    ) -> RestorePlan:
        return run_restore(self.config, req, confirm, self.should_stop)

    def prune(self, dry_run: bool = False) -> PruneReport:
        with run_lock(self.config.layout, self.config.lock_timeout, self.should_stop):
            return prune(self.config, self.clock.now(), dry_run=dry_run, should_stop=self.should_stop)

    def sync_remote(self) -> SyncReport:
        """Upload what is missing, apply remote retention. Raises RemoteError."""
        with run_lock(self.config.layout, self.config.lock_timeout, self.should_stop):
            return sync_and_record(self.config, self.clock)

    # -- restore drills and source spot checks ----------------------------------------------------------
    def drill(self, name: str | None = None, identity: Path | None = None) -> drills.DrillResult:
        """Restore ``name`` (or the newest usable archive) into the scratch dir, check it, run the
        probe, record the result (manifest entry, state file) and tell the observer. Raises
        ConfigError for a user error and Interrupted on SIGTERM; a failed drill is a result."""
        res = drills.drill(self.config, self.clock, name, identity, self.should_stop)
        self.observer.drill_done()
        return res

    def scheduled_drill(self) -> drills.DrillResult | None:
        """The service's drill: whatever stops it from drilling (no archive, no identity for an
        encrypted one) is recorded as a failed drill, so that ``status`` says so."""
        try:
            return self.drill()
        except Interrupted:
            return None
        except LockTimeout as e:  # another drill (a manual one) held the drill lock all along
            event("drill.skipped", f"restore drill skipped: {e}", level=logging.WARNING)
            return None
        except BackupError as e:
            res = drills.drill_failure(self.config, self.clock, "-", str(e))
            self.observer.drill_done()
            return res

    def check_source(
        self, name: str | None = None, sample_percent: float | None = None, identity: Path | None = None
    ) -> spot_check.SpotResult:
        """Compare ``name`` (or the newest usable archive) with the live source and record it."""
        res = spot_check.check_source(
            self.config, self.clock, name, sample_percent, identity, self.should_stop
        )
        self.observer.drill_done()  # metrics and report: status may have changed
        return res

    # -- the scheduled service -----------------------------------------------------------------
    def scheduler(self) -> Scheduler:
        return Scheduler(
            self.config,
            self.clock,
            self.manifest,
            self.stop_event,
            backup=lambda trigger: self.run_backup("daily", trigger=trigger),
            prune=self.prune,
            observer=self.observer,
            recover=self.recover_restore,
            drill=self.scheduled_drill,
            drill_start=self.drill_start,
        )

    def drill_start(self) -> None:
        """On the service's start: a drill that died is recorded as failed (not run again and again
        if it is what kills the service), and what it left behind is removed."""
        msg = drills.clean_stale(self.config)  # first: it finds the dead probe by the state's token
        if msg:
            event("drill.cleaned", msg, level=logging.WARNING)
        if drills.record_dead_drill(self.config, self.clock):
            self.observer.drill_done()
        if self.config.drill_schedule and self.config.encrypt_local and self.config.identity_file is None:
            event(
                "drill.no_identity",
                f"the local archives are encrypted and {self.config.prefix}IDENTITY_FILE is not set: "
                f"scheduled restore drills will fail until it is (or set {self.config.prefix}DRILL_SCHEDULE= "
                "to turn them off and drill by hand with --identity)",
                level=logging.WARNING,
            )

    def install_signal_handlers(self) -> None:
        self.scheduler().install_signal_handlers()

    def start(self, max_runs: int | None = None) -> int:
        """Run until SIGTERM/SIGINT (or ``max_runs`` scheduled runs, for tests). Returns 0."""
        return self.scheduler().start(max_runs)
