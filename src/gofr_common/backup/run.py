"""One backup run, as a short list of stages.

  lock -> pre-hook -> write (writer.py) -> verify and record (verify.py, manifest.py; sealed.py for
  ENCRYPT_LOCAL) -> tier copies (tiers.py) -> scrub (scrub.py, scheduled runs) -> prune
  (retention.py) -> record the result (state.py) -> off-site copy (offsite.py) -> source spot check
  (spot_check.py; scheduled runs) -> post-hook, always.

The run's state lives in a :class:`Run`; the scheduler (scheduler.py) only decides when to start
one. Failures of the off-site copy never change the local outcome.
"""

from __future__ import annotations

import contextlib
import logging
import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from . import chain, drill, incremental, layout, sealed, spot_check
from .config import BackupConfig, period_text
from .errors import BackupError, Interrupted
from .fsutil import NotOurs, regular_in, remove_quietly, run_lock, tier_dir_fd, unlink_regular
from .health import chain_problem, newest_daily
from .hooks import run_hook
from .log import event
from .manifest import Entry, Manifest, created_of, drill_failed, failed, new_entry
from .offsite import sync_and_record
from .retention import PruneReport, prune, remove_dead_leftovers
from .schedule import Clock, now_iso
from .scrub import scrub, verdict_fields
from .state import SCHEDULED, record_failure, record_remote, record_result, record_scrub
from .tiers import copy_to_tiers, wanted_tiers
from .verify import capturing, verify_archive
from .writer import WriteResult, any_path_exists, no_data_error, write_archive


@dataclass
class Outcome:
    status: str  # ok | incomplete | failed | interrupted
    entry: Entry | None = None
    path: Path | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    pruned: PruneReport | None = None
    tier_copies: list[str] = field(default_factory=list)
    remote: Any = None  # SyncReport, or None when there is no remote or the upload failed

    def hook_env(self) -> dict[str, str]:
        """What the post-hook learns about the outcome."""
        return {
            "GOFR_BACKUP_STATUS": self.status,
            "GOFR_BACKUP_ARCHIVE": str(self.path) if self.path else "",
            "GOFR_BACKUP_ERROR": self.error or "",
            "GOFR_BACKUP_SIZE_BYTES": str(self.entry["size_bytes"]) if self.entry else "",
        }


def throughput(nbytes: int | None, seconds: float | None) -> str:
    if not nbytes or not seconds:
        return "-"
    return f"{nbytes / seconds / 1e6:.1f} MB/s"


@dataclass
class Run:
    """One backup of one tier. ``log_failures``: the CLI prints failures itself."""

    config: BackupConfig
    clock: Clock
    manifest: Manifest
    should_stop: Callable[[], bool]
    tier: str = "daily"
    trigger: str = "manual"
    log_failures: bool = True
    # what the verification pass gathered for the spot check, and its index's temp file
    spot_view: spot_check.ArchiveView | None = field(default=None, init=False)
    spot_index: IO[bytes] | None = field(default=None, init=False)

    @property
    def scheduled(self) -> bool:
        return self.trigger in SCHEDULED

    def now(self) -> str:
        return now_iso(self.clock.now())

    # -- the run -------------------------------------------------------------------------------
    def __call__(self) -> Outcome:
        """Lock, pre-hook, the stages, then the post-hook, always. This is the run's one boundary:
        whatever goes wrong inside (our bug or a library's surprise included) ends as a recorded,
        logged failure with the post-hook run, never as an exception that skips them."""
        c = self.config
        try:
            with run_lock(c.layout, c.lock_timeout, self.should_stop):
                try:
                    self.pre_hook()
                    out = self.stages()
                except Interrupted as e:
                    event(
                        "backup.interrupted",
                        f"backup interrupted: {e}; partial archive removed",
                        level=logging.WARNING,
                    )
                    out = Outcome("interrupted", error=str(e))
                except Exception as e:  # noqa: BLE001 - the boundary: every failure is recorded
                    out = Outcome("failed", error=self.record_failure(e))
                finally:
                    if self.spot_index is not None:
                        self.spot_index.close()
                    if self.spot_view is not None:
                        self.spot_view.close()
                self.post_hook(out)
                return out
        except Interrupted as e:  # while waiting for the lock
            return Outcome("interrupted", error=str(e))
        except Exception as e:  # noqa: BLE001 - the lock could not be had, or the post-hook failed
            return Outcome("failed", error=self.record_failure(e))

    def stages(self) -> Outcome:
        c = self.config
        if not any_path_exists(c):
            raise no_data_error(c)  # before anything is logged or written
        self.manifest.load(c.project)  # rebuilds a missing/corrupt manifest before a new archive appears
        self.clean_drill_leftovers()
        self.clean_dead_runs()
        created = self.clock.now()
        event(
            "backup.start",
            f"backup started ({self.trigger}, {self.tier})",
            project=c.project,
            tier=self.tier,
            trigger=self.trigger,
            paths=",".join(f"{p.name}={p.path}" for p in c.paths),
        )
        w = self.write(created)
        entry = self.verify_and_record(w, created)
        copies = self.tier_copies(entry, created)
        self.scrub(entry, copies)
        report = self.prune(copies)
        status = self.record_result(w, entry)
        out = Outcome(
            status,
            entry,
            c.layout.archive(entry["path"]),
            warnings=w.warnings,
            pruned=report,
            tier_copies=copies,
        )
        out.remote = self.offsite()
        self.spot_check(entry)
        return out

    # -- stages --------------------------------------------------------------------------------
    def pre_hook(self) -> None:
        c = self.config
        if c.pre_hook:
            err = run_hook("pre", c.pre_hook, c.hook_timeout, self.hook_env(), self.should_stop)
            if err:
                raise BackupError(f"{err}; no backup was made")

    def post_hook(self, out: Outcome) -> None:
        c = self.config
        if c.post_hook:  # always, whatever happened
            run_hook("post", c.post_hook, c.hook_timeout, {**self.hook_env(), **out.hook_env()})

    def hook_env(self) -> dict[str, str]:
        return {
            "GOFR_BACKUP_PROJECT": self.config.project,
            "GOFR_BACKUP_TIER": self.tier,
            "GOFR_BACKUP_TRIGGER": self.trigger,
        }

    def clean_drill_leftovers(self) -> None:
        """What a restore drill that was killed left in the backup volume goes before a backup needs
        the room (never fatal: the next drill removes it too)."""
        try:
            msg = drill.clean_stale(self.config)
        except Exception as e:  # noqa: BLE001
            event("drill.clean_failed", f"could not remove a killed drill's scratch dir: {failure_text(e)}")
            return
        if msg:
            event("drill.cleaned", msg, level=logging.WARNING)

    def clean_dead_runs(self) -> None:
        """The partial archives and temp dir of killed runs go before the space check needs the
        room (we hold the run lock: their writers are dead). Never fatal: housekeeping tries again."""
        try:
            removed = remove_dead_leftovers(self.config)
        except Exception as e:  # noqa: BLE001
            event("backup.clean_failed", f"could not remove what killed runs left: {failure_text(e)}")
            return
        removed += remove_dead_snapshot_partials(self.config)
        if removed:
            event(
                "backup.cleaned",
                f"removed what killed runs left: {', '.join(removed)}",
                level=logging.WARNING,
            )

    @property
    def spot_checks(self) -> bool:
        return self.scheduled and self.config.spot_check_after_backup

    def write(self, created: datetime) -> WriteResult:
        c = self.config
        entries = self.manifest.read()
        ratio = last_ratio(entries, c.project, c.compression)
        try:
            if c.mode == "incremental" and self.tier == "daily":
                base, why = self.chain_base(entries, created)
                event(
                    "backup.chain",
                    f"incremental over {base.archive}" if base is not None else f"full: {why}",
                    kind=chain.KIND_INCREMENTAL if base is not None else chain.KIND_FULL,
                    parent=base.archive if base is not None else "-",
                )
                w = incremental.write_chained(
                    c,
                    self.tier,
                    created,
                    base,
                    self.should_stop,
                    expected_ratio=ratio,
                    earlier=held_entries(entries, c.project),
                )
            else:
                w = write_archive(
                    c,
                    self.tier,
                    created,
                    self.should_stop,
                    expected_ratio=ratio,
                    earlier=held_entries(entries, c.project),
                )
        except OSError as e:
            raise BackupError(
                f"cannot write archive in {c.layout.tier_dir(self.tier)}: {e.strerror or e}"
            ) from None
        for msg in w.warnings:
            event("backup.warning", msg, level=logging.WARNING)
        event(
            "backup.written",
            f"archive written: {w.filename}",
            size_bytes=w.size_bytes,
            files=w.file_count,
            source_bytes=w.source_bytes,
            duration_s=w.duration_s,
            throughput=throughput(w.source_bytes, w.duration_s),
        )
        return w

    def tier_due(self, entries: list[Entry], created: datetime) -> list[str]:
        """The tiers this run will copy its archive into (tier_copies): scheduled daily runs."""
        if not (self.scheduled and self.tier == "daily"):
            return []
        mine = [e for e in entries if e.get("project") == self.config.project]
        return wanted_tiers(self.config, mine, created)

    def chain_base(self, entries: list[Entry], created: datetime) -> tuple[incremental.Snapshot | None, str]:
        """Incremental mode: the snapshot to write an incremental over, or (None, why a full)."""
        return chain_base(self.config, entries, created, self.tier_due(entries, created))

    def verify_and_record(self, w: WriteResult, created: datetime) -> Entry:
        """Verify (VERIFY_AFTER_BACKUP), seal (ENCRYPT_LOCAL), add to the manifest. A failure on the
        way removes the archive: never a finished-looking archive the manifest does not describe."""
        c = self.config
        entry = new_entry(
            project=c.project,
            filename=w.filename,
            tier=self.tier,
            created=created.isoformat(),
            size_bytes=w.size_bytes,
            sha256=w.sha256,
            compression=c.compression,
            file_count=w.file_count,
            source_bytes=w.source_bytes,
            trigger=self.trigger,
            duration_s=w.duration_s,
            warnings=w.warnings,
            complete=w.complete,
        )
        if "kind" in w.meta:  # a chained archive (incremental mode): its place in the chain
            link = w.meta.get("chain")
            entry["kind"] = str(w.meta["kind"])
            entry["parent"] = link["parent"] if isinstance(link, dict) else None
            entry["full"] = link["full"] if isinstance(link, dict) else None
        try:
            cap = rec = None
            # the pass that verifies also gathers what the spot check needs: a full's members and
            # index; an incremental's members, index and directory listings (the chain's final tree)
            if self.spot_checks and chain.kind_of(entry) == chain.KIND_FULL:
                cap, listing, index = spot_check.capture()
                self.spot_index = index
            elif self.spot_checks:
                cap, rec, index = spot_check.capture_chain()
                self.spot_index = index
            if c.verify_after_backup or cap is not None:
                with capturing(cap) if cap is not None else contextlib.nullcontext():
                    res = verify_archive(w.path, w.sha256, should_stop=self.should_stop)
                if cap is not None and rec is not None:
                    self.spot_view = spot_check.increment_view(w.filename, cap, rec, w.path, w.sha256)
                elif cap is not None:
                    self.spot_view = spot_check.view_of(w.filename, cap, listing, index)
            if c.verify_after_backup:
                entry.update(verdict_fields(res, self.now(), entry))  # type: ignore[typeddict-item]
                event(
                    "backup.verified" if res.ok else "backup.verify_failed",
                    "verification passed"
                    if res.ok
                    else (f"verification FAILED: {res.error}" if res.checked else str(res.error)),
                    level=logging.INFO if res.ok else logging.ERROR,
                    filename=w.filename,
                )
            if c.encrypt_local and entry["verified"] is not False:  # also when verification is off
                self.seal(w.path, entry)
            self.manifest.add(entry)
        except BaseException:
            if rec is not None and self.spot_view is None:
                rec.close()
            for p in (w.path, w.path.with_name(w.filename + layout.AGE_SUFFIX)):
                remove_quietly(p)
                remove_quietly(layout.sidecar_path(p))
            remove_quietly(incremental.snapshot_path(w.path))
            raise
        if entry["verified"] is False:
            raise BackupError(f"archive {w.filename} failed verification: {entry['verify_error']}")
        if c.verify_after_backup and entry["verified"] is None:  # could not be read back (EIO, ...)
            raise BackupError(
                f"archive {w.filename} was written but could not be verified ({entry['verify_error']}); "
                "it is kept, not verified, and the next scrub tries again"
            )
        return entry

    def seal(self, plain: Path, entry: Entry) -> None:
        """ENCRYPT_LOCAL: replace the verified plaintext archive by its age-encrypted form."""
        lay = self.config.layout
        enc = plain.with_name(plain.name + layout.AGE_SUFFIX)
        sha = sealed.encrypt_file(plain, enc, self.config.encrypt_recipients)
        layout.write_sidecar(enc, sha)
        plain_sha = entry["sha256"]
        os.unlink(plain)
        os.unlink(layout.sidecar_path(plain))
        entry.update(
            {
                "filename": enc.name,
                "path": lay.rel(enc),
                "sha256": sha,
                "size_bytes": enc.stat().st_size,
                "encrypted": True,
                "plain_sha256": plain_sha,
            }
        )
        event("backup.encrypted", f"encrypted locally: {enc.name}")

    def tier_copies(self, entry: Entry, created: datetime) -> list[str]:
        # tier copies are made of fulls only: the weekly and monthly tiers never need a daily
        if (
            self.scheduled
            and self.tier == "daily"
            and entry["complete"]
            and chain.kind_of(entry) == chain.KIND_FULL
        ):
            return copy_to_tiers(self.config, self.manifest, entry, created, self.now())
        return []

    def scrub(self, entry: Entry, copies: list[str]) -> None:
        """Scheduled runs also re-verify the archives checked longest ago (SCRUB_MAX_BYTES)."""
        c = self.config
        if not self.scheduled or c.scrub_max_bytes <= 0:
            return
        rep = scrub(c, self.manifest, self.now(), self.should_stop, frozenset([entry["path"], *copies]))
        record_scrub(c, rep.to_dict())

    def prune(self, copies: list[str]) -> PruneReport:
        """Scheduled runs keep every tier in shape; a manual run touches only what it wrote."""
        tiers = list(layout.TIERS) if self.scheduled else [self.tier, *[x.split("/", 1)[0] for x in copies]]
        report = prune(self.config, self.clock.now(), tiers=tiers, should_stop=self.should_stop)
        event(
            "housekeeping.done",
            f"housekeeping: {len(report.deleted)} deleted, {report.kept} kept",
            deleted=",".join(d["filename"] for d in report.deleted) or "-",
            cleaned=len(report.cleaned),
        )
        return report

    def record_result(self, w: WriteResult, entry: Entry) -> str:
        status = "ok" if w.complete else "incomplete"
        record_result(self.config, self.now(), status, entry, w.warnings)
        event(
            "backup.done",
            f"backup {'finished' if status == 'ok' else 'INCOMPLETE'}: {w.filename}",
            level=logging.INFO if status == "ok" else logging.WARNING,
            status=status,
            size_bytes=w.size_bytes,
            duration_s=w.duration_s,
            verified=entry["verified"],
        )
        return status

    def record_failure(self, exc: Exception) -> str:
        """Log one line (the traceback of an unexpected error at debug level only), record the
        failure in the state file; the one-line error."""
        error = failure_text(exc)
        if not isinstance(exc, BackupError):
            event("backup.traceback", traceback.format_exc(), level=logging.DEBUG)
        if self.log_failures:
            event("backup.failed", f"backup failed: {error}", level=logging.ERROR, trigger=self.trigger)
        try:
            record_failure(self.config, self.now(), error, self.trigger)
        except Exception as e:  # noqa: BLE001 - a full disk, a read-only dir: the error itself is reported
            # always (the CLI prints only the error itself): status would go on saying what it said.
            # When the backup dir is not writable at all, the failure already says so, in one line
            writable = os.access(self.config.backup_dir, os.W_OK)
            event(
                "state.write_failed",
                f"the failure could not be recorded in the state file {self.config.layout.state} "
                f"({failure_text(e)}): status will not show it",
                level=logging.ERROR if writable else logging.DEBUG,
            )
        return error

    def spot_check(self, entry: Entry) -> None:
        """After a scheduled backup: compare it with the live source. Its result never changes the
        backup's outcome; a failure is recorded (``status`` turns unhealthy) and logged."""
        if not self.spot_checks:
            return
        c = self.config
        try:
            spot_check.after_backup(c, self.clock, entry, self.spot_view, self.should_stop)
        except Interrupted:
            event("spot_check.interrupted", "source spot check interrupted; nothing recorded")
        except Exception as e:  # noqa: BLE001 - recorded as a failed spot check, never a failed backup
            res = spot_check.SpotResult(archive=entry["filename"], at=self.now())
            res.error = f"the spot check could not run: {failure_text(e)}"
            if not isinstance(e, BackupError):
                event("spot_check.traceback", traceback.format_exc(), level=logging.DEBUG)
            try:
                spot_check.record(c, res, entry["path"])
            except Exception as e2:  # noqa: BLE001
                event("state.write_failed", f"cannot record the spot check: {e2}", level=logging.ERROR)

    def offsite(self) -> Any:
        """After a local backup: an off-site failure of any kind never changes the local outcome; it
        is recorded as a remote failure and retried by the next run."""
        if self.config.remote is None:
            return None
        try:
            return sync_and_record(self.config, self.clock)
        except Exception as e:  # noqa: BLE001 - boto3 raises its own types (S3UploadFailedError, ...)
            error = failure_text(e)
            if not isinstance(e, BackupError):
                event("remote.traceback", traceback.format_exc(), level=logging.DEBUG)
            event(
                "remote.failed",
                f"off-site upload failed (will retry on the next run): {error}",
                level=logging.ERROR,
            )
            try:
                record_remote(self.config, self.now(), error=error)
            except Exception as e2:  # noqa: BLE001
                event("state.write_failed", f"cannot record the remote failure: {e2}", level=logging.ERROR)
            return None


def failure_text(exc: BaseException) -> str:
    """One line for any exception: ours already are; anything else names its type."""
    if isinstance(exc, BackupError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"unexpected error: {exc.strerror}{where}"
    text = " ".join(str(exc).split()) or "no message"
    return f"unexpected error ({type(exc).__name__}: {text})"


FULL_GRACE = timedelta(hours=1)


def chain_base(
    config: BackupConfig,
    entries: list[Entry],
    created: datetime,
    tiers_due: Sequence[str] = (),
) -> tuple[incremental.Snapshot | None, str]:
    """What a daily run in incremental mode writes: an incremental over the newest daily archive
    (its snapshot, and "incremental over X"), or a full (None, and why). A full when there is no
    earlier daily archive; when the newest failed verification or its restore drill, is incomplete, was written in
    full mode (no snapshot), or its chain is broken; when the chain's full is FULL_EVERY old (less
    an hour's grace, so that a 02:00 schedule with 7d starts a chain every 7th day even when a run
    started a few minutes late); when a weekly/monthly copy is due (those are made of fulls only);
    and when the newest's snapshot is missing, damaged or not its own (incremental.base_or_full)."""
    lay = config.layout
    newest = newest_daily(config, entries)
    if newest is None:
        return None, "no earlier daily archive"
    name = newest["filename"]
    if failed(newest):
        return None, f"the newest archive {name} failed verification ({newest.get('verify_error')})"
    if drill_failed(newest):
        return None, f"the newest archive {name} failed its restore drill"
    if newest.get("complete") is False:
        # an incremental over it would be restorable only with --allow-incomplete, and never
        # off-site (sync does not upload incomplete archives): a full restores the chain's health
        return None, f"the newest archive {name} is incomplete (it could not read everything)"
    if "kind" not in newest:
        return None, f"the newest archive {name} was written in full mode (no snapshot to build on)"
    mine = [e for e in entries if e.get("project") == config.project]
    why = chain_problem(config, mine, newest, fulls=True)
    if why is not None:
        return None, f"the chain of {name} is broken: {why}"
    head = chain.chain_of(mine, newest).archives[0]
    age = created - created_of(head)
    grace = min(FULL_GRACE, config.full_every / 24)
    if age >= config.full_every - grace:
        return None, (
            f"the chain's full {head['filename']} is {age.total_seconds() / 86400:.1f}d old "
            f"(FULL_EVERY={period_text(config.full_every)})"
        )
    if tiers_due:
        return None, f"a {' and '.join(tiers_due)} copy is due (tier copies are made of fulls only)"
    snap, why = incremental.base_or_full(lay.archive(newest["path"]), newest.get("sha256"))
    if snap is None:
        return None, str(why)
    if snap.full != chain.link_of(head):
        return None, f"the snapshot of {name} names another full ({snap.full.get('filename')})"
    return snap, f"incremental over {name}"


def remove_dead_snapshot_partials(config: BackupConfig) -> list[str]:
    """What killed incremental runs of this project left in the daily tier: ``<archive>.snap.partial``
    files, and a ``<archive>.snap`` whose archive is not there (a run killed between the two
    renames: the snapshot is renamed first). The caller holds the run lock: their writers are dead.
    Retention removes a ``.snap`` with its archive; one it left (killed between the two unlinks)
    goes here too."""
    removed: list[str] = []
    snap, partial = incremental.SNAP_SUFFIX, incremental.SNAP_SUFFIX + layout.PARTIAL_SUFFIX
    try:
        fd = tier_dir_fd(config.backup_dir, "daily")
    except NotOurs:
        return removed  # reported by prune
    if fd is None:
        return removed
    try:
        names = set(os.listdir(fd))
        for n in sorted(names):
            if n.endswith(partial):
                archive = n[: -len(partial)]
            elif n.endswith(snap) and n[: -len(snap)] not in names:
                archive = n[: -len(snap)]
            else:
                continue
            a = layout.parse(archive)
            if a is None or a.project != config.project or a.tier != "daily":
                continue
            try:
                if regular_in(fd, n) is not None and unlink_regular(fd, n):
                    removed.append(f"daily/{n}")
            except NotOurs:
                continue
    finally:
        os.close(fd)
    return removed


def held_entries(entries: list[Entry], project: str) -> list[Entry]:
    """The archives of ``project`` (any tier) that tell what the data held: complete or not (an
    incomplete archive that could not read one file still held the others), verified or not."""
    return [e for e in entries if e.get("project") == project and layout.entry_problem(e, project) is None]


def last_ratio(entries: list[Entry], project: str, compression: str) -> float | None:
    """Compressed/source size of the newest good full archive with the same codec (pre-flight).
    Never an incremental's: one that stored a few bytes is mostly headers (a ratio of 1000 or
    more), which would make the space check refuse every backup after a quiet day."""
    es = [
        e
        for e in entries
        if e.get("project") == project
        and chain.kind_of(e) == chain.KIND_FULL
        and layout.entry_problem(e, project) is None
        and e.get("compression") == compression
        and e.get("verified") is not False
        and isinstance(e.get("source_bytes"), int)
        and (e.get("source_bytes") or 0) > 0
    ]
    if not es:
        return None
    e = max(es, key=lambda e: e["created"])
    return float(e["size_bytes"] or 0) / float(e["source_bytes"] or 1)
