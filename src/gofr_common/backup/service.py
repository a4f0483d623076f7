"""The orchestrator: one backup run (write -> verify -> manifest -> tier copies -> housekeeping),
and the scheduled service loop around it.

Time comes from an injectable Clock, so the scheduler can be driven through months in a test
without sleeping.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import log as glog
from . import naming
from .archive import any_path_exists, no_data_error, sidecar_path, write_archive, write_sidecar
from .config import BackupConfig
from .errors import BackupError, Interrupted
from .fsutil import ensure_writable_dir, file_lock, remove_quietly
from .hooks import run_hook
from .housekeeping import Entry, Manifest, PruneReport, housekeeping
from .schedule import Clock, local_tz  # noqa: F401  (local_tz, Clock: imported from here)
from .status import next_run, now_iso, prev_run, update_state
from .verify import VerifyResult, verify_archive

event = glog.event


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


def throughput(nbytes: int | None, seconds: float | None) -> str:
    if not nbytes or not seconds:
        return "-"
    return f"{nbytes / seconds / 1e6:.1f} MB/s"


class BackupService:
    def __init__(self, config: BackupConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.stop_event = threading.Event()
        self.manifest = Manifest(config.backup_dir)
        self.log_failures = True  # the CLI prints failures itself

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.config.backup_dir / f".gofr-{self.config.project}.lock"

    def should_stop(self) -> bool:
        return self.stop_event.is_set()

    def run_lock(self, timeout: float | None = None, readonly_ok: bool = False) -> Any:
        if not readonly_ok:
            ensure_writable_dir(self.config.backup_dir)
        return file_lock(
            self.lock_path,
            self.config.lock_timeout if timeout is None else timeout,
            f"the {self.config.project} backup lock",
            on_wait=lambda: event(
                "lock.wait", "another gofr-backup run holds the lock; waiting", lock=str(self.lock_path)
            ),
            should_stop=self.should_stop,
            readonly_ok=readonly_ok,
        )

    def rel(self, p: Path) -> str:
        return str(p.relative_to(self.config.backup_dir))

    # -- public API ----------------------------------------------------------------------------
    def create_backup(self, tier: str = "daily") -> Path | None:
        """One backup; the archive's path, or None if it failed (the error is logged)."""
        out = self.run_backup(tier=tier)
        return out.path if out.status in ("ok", "incomplete") else None

    def verify_backup(self, path: Path | str) -> bool:
        return self.verify(Path(path)).ok

    def verify(self, path: Path, identity: Path | None = None) -> VerifyResult:
        """Verify one archive and record the result in the manifest."""
        try:
            rel = self.rel(path.resolve() if not path.is_absolute() else path)
        except ValueError:
            rel = None
        entry = next((e for e in self.manifest.read() if e["path"] == rel), None) if rel else None
        if path.name.endswith(naming.AGE_SUFFIX):
            res = self._verify_encrypted(path, entry or {}, identity or self.config.identity_file)
        else:
            res = verify_archive(path, (entry or {}).get("sha256"), should_stop=self.should_stop)
        if entry is not None and rel is not None:
            self.manifest.set_fields(
                rel,
                verified=res.ok,
                verified_at=now_iso(self.clock.now()),
                verify_error=res.error,
                archive_intact=res.archive_intact,
            )
        return res

    def _verify_encrypted(self, path: Path, entry: Entry, identity: Path | None) -> VerifyResult:
        """The checksum covers the encrypted file (no key needed); with an identity, the archive
        inside is decrypted to a temp file and verified in full too."""
        import tempfile

        from . import crypto
        from .archive import read_sidecar

        res = VerifyResult(path=path, ok=False)
        side = read_sidecar(path)
        sha = crypto.sha256_file(path) if path.is_file() else None
        res.sha256 = sha
        if sha is None:
            res.error = f"archive not found: {path}"
        elif not side:
            res.error = (
                f"checksum file {'missing' if side is None else 'malformed'}: {sidecar_path(path).name}"
            )
        elif sha != side or (entry.get("sha256") and sha != entry["sha256"]):
            res.error = f"checksum mismatch: {path.name} has sha256 {sha[:16]}…"
        if res.error or identity is None:
            res.ok = res.error is None
            res.archive_intact = res.ok
            return res
        with tempfile.TemporaryDirectory(prefix="gofr-verify-") as td:
            plain = Path(td) / path.name.removesuffix(naming.AGE_SUFFIX)
            with open(path, "rb") as f:
                crypto.decrypt_to(f, plain, identity)
            inner = verify_archive(
                plain, entry.get("plain_sha256"), sidecar=False, should_stop=self.should_stop
            )
        inner.path, inner.sha256 = path, sha
        return inner

    # -- one run -------------------------------------------------------------------------------
    def run_backup(self, tier: str = "daily", trigger: str = "manual") -> Outcome:
        """Lock, pre-hook, write, verify, record, tier copies, prune; then the post-hook, always."""
        c = self.config
        hook_env = {
            "GOFR_BACKUP_PROJECT": c.project,
            "GOFR_BACKUP_TIER": tier,
            "GOFR_BACKUP_TRIGGER": trigger,
        }
        try:
            with self.run_lock():
                try:
                    if c.pre_hook:
                        err = run_hook("pre", c.pre_hook, c.hook_timeout, hook_env, self.should_stop)
                        if err:
                            raise BackupError(f"{err}; no backup was made")
                    out = self._run_locked(tier, trigger)
                except Interrupted as e:
                    event(
                        "backup.interrupted",
                        f"backup interrupted: {e}; partial archive removed",
                        level=logging.WARNING,
                    )
                    out = Outcome("interrupted", error=str(e))
                except BackupError as e:
                    self._record_failure(str(e), trigger)
                    out = Outcome("failed", error=str(e))
                if c.post_hook:  # always, whatever happened
                    run_hook("post", c.post_hook, c.hook_timeout, {**hook_env, **_outcome_env(out)})
                return out
        except Interrupted as e:  # while waiting for the lock
            return Outcome("interrupted", error=str(e))
        except BackupError as e:  # the lock could not be had
            self._record_failure(str(e), trigger)
            return Outcome("failed", error=str(e))

    def _record_failure(self, error: str, trigger: str) -> None:
        if self.log_failures:
            event("backup.failed", f"backup failed: {error}", level=logging.ERROR, trigger=trigger)
        t = now_iso(self.clock.now())

        def fn(st: dict[str, Any]) -> None:
            st["last_result"] = "failed"
            st["last_run"] = t
            st["last_failure"] = {"time": t, "error": error, "trigger": trigger}

        try:
            update_state(self.config, fn)
        except (OSError, BackupError) as e:  # a full disk, a read-only dir: the error itself is reported
            if self.log_failures:
                event(
                    "state.write_failed",
                    f"cannot record the failure in the state file: {e}",
                    level=logging.ERROR,
                )

    def _run_locked(self, tier: str, trigger: str) -> Outcome:
        c = self.config
        if not any_path_exists(c):
            raise no_data_error(c)  # before anything is logged or written
        self.manifest.load(c.project)  # rebuilds a missing/corrupt manifest before a new archive appears
        created = self.clock.now()
        event(
            "backup.start",
            f"backup started ({trigger}, {tier})",
            project=c.project,
            tier=tier,
            trigger=trigger,
            paths=",".join(f"{p.name}={p.path}" for p in c.paths),
        )
        try:
            w = write_archive(c, tier, created, self.should_stop, expected_ratio=self._last_ratio())
        except OSError as e:
            raise BackupError(f"cannot write archive in {c.backup_dir / tier}: {e.strerror or e}") from None
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
        entry: Entry = {
            "project": c.project,
            "filename": w.filename,
            "path": self.rel(w.path),
            "tier": tier,
            "created": created.isoformat(),
            "size_bytes": w.size_bytes,
            "sha256": w.sha256,
            "compression": c.compression,
            "verified": None,
            "verified_at": None,
            "verify_error": None,
            "file_count": w.file_count,
            "source_bytes": w.source_bytes,
            "duration_s": w.duration_s,
            "warnings": w.warnings,
            "complete": w.complete,
            "trigger": trigger,
        }
        try:
            if c.verify_after_backup:
                res = verify_archive(w.path, w.sha256, should_stop=self.should_stop)
                entry.update(verified=res.ok, verified_at=now_iso(self.clock.now()), verify_error=res.error)
                event(
                    "backup.verified" if res.ok else "backup.verify_failed",
                    "verification passed" if res.ok else f"verification FAILED: {res.error}",
                    level=logging.INFO if res.ok else logging.ERROR,
                    filename=w.filename,
                )
            if c.encrypt_local and entry["verified"]:
                self._encrypt_local(w.path, entry)
            self.manifest.add(entry)
        except BaseException:
            # never leave a finished-looking archive that the manifest does not describe
            for p in (w.path, w.path.with_name(w.filename + naming.AGE_SUFFIX)):
                remove_quietly(p)
                remove_quietly(sidecar_path(p))
            raise
        if entry["verified"] is False:
            raise BackupError(f"archive {w.filename} failed verification: {entry['verify_error']}")

        copies: list[str] = []
        if trigger in ("schedule", "catch-up") and tier == "daily" and entry["complete"]:
            copies = self._tier_copies(entry, created)
        # scheduled runs keep every tier in shape; a manual run touches only what it wrote
        if trigger in ("schedule", "catch-up"):
            tiers = ["daily", "weekly", "monthly"]
        else:
            tiers = [tier, *[x.split("/", 1)[0] for x in copies]]
        report = housekeeping(c, self.clock.now(), tiers=tiers)
        event(
            "housekeeping.done",
            f"housekeeping: {len(report.deleted)} deleted, {report.kept} kept",
            deleted=",".join(d["filename"] for d in report.deleted) or "-",
            cleaned=len(report.cleaned),
        )

        status = "ok" if w.complete else "incomplete"
        t = now_iso(self.clock.now())

        def fn(st: dict[str, Any]) -> None:
            st["last_result"] = status
            st["last_run"] = t
            st["last_warnings"] = w.warnings
            if status == "ok":
                st["last_success"] = {
                    "time": entry["created"],
                    "filename": w.filename,
                    "size_bytes": w.size_bytes,
                    "path": entry["path"],
                    "trigger": trigger,
                }
                if trigger in ("schedule", "catch-up"):
                    st["last_scheduled_success"] = entry["created"]

        update_state(c, fn)
        event(
            "backup.done",
            f"backup {'finished' if status == 'ok' else 'INCOMPLETE'}: {w.filename}",
            level=logging.INFO if status == "ok" else logging.WARNING,
            status=status,
            size_bytes=w.size_bytes,
            duration_s=w.duration_s,
            verified=entry["verified"],
        )
        out = Outcome(
            status,
            entry,
            c.backup_dir / entry["path"],
            warnings=w.warnings,
            pruned=report,
            tier_copies=copies,
        )
        if c.remote is not None:
            out.remote = self._offsite()
        return out

    def _encrypt_local(self, plain: Path, entry: Entry) -> None:
        """ENCRYPT_LOCAL: replace the verified plaintext archive by its age-encrypted form."""
        from . import crypto

        enc = plain.with_name(plain.name + naming.AGE_SUFFIX)
        sha = crypto.encrypt_file(plain, enc, self.config.encrypt_recipients)
        write_sidecar(enc, sha)
        plain_sha = entry["sha256"]
        os.unlink(plain)
        os.unlink(sidecar_path(plain))
        entry.update(
            filename=enc.name,
            path=self.rel(enc),
            sha256=sha,
            size_bytes=enc.stat().st_size,
            encrypted=True,
            plain_sha256=plain_sha,
        )
        event("backup.encrypted", f"encrypted locally: {enc.name}")

    def sync_remote(self) -> Any:
        """Upload what is missing, apply remote retention. Raises RemoteError. Caller holds the lock."""
        from .offsite import sync
        from .remote import remote_for

        remote = remote_for(self.config)
        assert remote is not None and self.config.remote is not None
        rep = sync(self.config, remote, self.clock.now())
        t = now_iso(self.clock.now())
        update_state(self.config, lambda st: st.update(remote_last_success=t, remote_count=rep.remote_count))
        event(
            "remote.synced",
            f"off-site copy up to date: {len(rep.uploaded)} uploaded, {len(rep.deleted)} "
            f"deleted, {rep.remote_count} on {self.config.remote.url}",
            uploaded=len(rep.uploaded),
        )
        return rep

    def _offsite(self) -> Any:
        """After a local backup: a failed upload never fails the backup; it is recorded and retried."""
        try:
            return self.sync_remote()
        except BackupError as e:
            t, err = now_iso(self.clock.now()), str(e)
            event(
                "remote.failed",
                f"off-site upload failed (will retry on the next run): {e}",
                level=logging.ERROR,
            )
            with contextlib.suppress(OSError, BackupError):
                update_state(self.config, lambda st: st.update(remote_last_failure={"time": t, "error": err}))
            return None

    def _last_ratio(self) -> float | None:
        """Compressed/source size of the newest good archive with the same codec (pre-flight)."""
        c = self.config
        es = [
            e
            for e in self.manifest.read()
            if e.get("project") == c.project
            and e.get("compression") == c.compression
            and e.get("verified") is not False
            and (e.get("source_bytes") or 0) > 0
        ]
        if not es:
            return None
        e = max(es, key=lambda e: e["created"])
        return float(e["size_bytes"]) / float(e["source_bytes"])

    def _tier_copies(self, entry: Entry, created: datetime) -> list[str]:
        """Keep the first scheduled backup of each ISO week / calendar month in weekly/ monthly/."""
        c = self.config
        mine = [
            e
            for e in self.manifest.read()
            if e.get("project") == c.project and e.get("verified") is not False
        ]
        wanted = []
        if c.enable_weekly:
            wk = created.isocalendar()[:2]
            if not any(
                e["tier"] == "weekly" and datetime.fromisoformat(e["created"]).isocalendar()[:2] == wk
                for e in mine
            ):
                wanted.append("weekly")
        if c.enable_monthly:
            mo = (created.year, created.month)
            if not any(
                e["tier"] == "monthly"
                and (datetime.fromisoformat(e["created"]).year, datetime.fromisoformat(e["created"]).month)
                == mo
                for e in mine
            ):
                wanted.append("monthly")
        out = []
        src = c.backup_dir / entry["path"]
        for tier in wanted:
            d = c.backup_dir / tier
            d.mkdir(mode=0o750, exist_ok=True)
            dst = d / entry["filename"].replace(f"_{entry['tier']}_", f"_{tier}_", 1)
            if dst.exists():
                continue
            try:
                os.link(src, dst)
                how = "hard link"
            except OSError:
                tmp = dst.with_name(dst.name + ".partial")
                shutil.copyfile(src, tmp)
                os.rename(tmp, dst)
                how = "copy"
            write_sidecar(dst, entry["sha256"])
            self.manifest.add({**entry, "tier": tier, "filename": dst.name, "path": self.rel(dst)})
            out.append(self.rel(dst))
            event("tier.copy", f"kept in {tier}/ as {dst.name} ({how})", tier=tier)
        return out

    # -- prune ---------------------------------------------------------------------------------
    def prune(self, dry_run: bool = False) -> PruneReport:
        with self.run_lock():
            return housekeeping(self.config, self.clock.now(), dry_run=dry_run)

    # -- the service loop ----------------------------------------------------------------------
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
        event("service.start", "gofr-backup service starting", **_redacted(c.to_dict()))
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

        update_state(c, started)
        if not c.enabled:
            event(
                "service.disabled",
                f"backups are disabled; set {c.prefix}ENABLED=true to turn them on. Idling.",
            )
            while not self.stop_event.wait(3600):
                pass
            return 0
        if c.cleanup_on_start:
            try:
                r = self.prune()
                event("housekeeping.start", f"housekeeping on start: {len(r.deleted)} deleted, {r.kept} kept")
            except BackupError as e:
                event("housekeeping.failed", f"housekeeping on start failed: {e}", level=logging.ERROR)
        if self.should_stop():
            return 0
        if self._missed_run(self.clock.now()):
            event("backup.catch_up", "the last scheduled backup was missed; running one catch-up backup now")
            self.run_backup("daily", trigger="catch-up")
        runs = 0
        last_fire: datetime | None = None
        while not self.should_stop():
            nxt = next_run(c.schedule, self.clock.now())
            if last_fire is not None and nxt.astimezone(UTC) <= last_fire.astimezone(UTC):
                nxt = next_run(c.schedule, last_fire + timedelta(seconds=1))  # never the same instant twice
            last_fire = nxt
            self._record_next_run(nxt)
            event("schedule.next", f"next backup at {now_iso(nxt)}", next_run=now_iso(nxt))
            if self.clock.wait_until(nxt, self.stop_event):
                break
            self.run_backup("daily", trigger="schedule")
            runs += 1
            if max_runs is not None and runs >= max_runs:
                break
        event("service.stop", "gofr-backup service stopped")
        return 0

    def _record_next_run(self, nxt: datetime) -> None:
        update_state(self.config, lambda st: st.update(next_run=now_iso(nxt)))

    def _missed_run(self, now: datetime) -> bool:
        """True when no scheduled backup has succeeded since the last time the schedule fired."""
        from .status import read_state

        last = read_state(self.config).get("last_scheduled_success")
        if not last:
            cands = [
                e["created"]
                for e in self.manifest.read()
                if e.get("project") == self.config.project
                and e["tier"] == "daily"
                and e.get("trigger") in ("schedule", "catch-up")
                and e.get("verified") is not False
            ]
            last = max(cands, default=None)
        if not last:
            return True
        return datetime.fromisoformat(last) < prev_run(self.config.schedule, now)


def _outcome_env(out: Outcome) -> dict[str, str]:
    return {
        "GOFR_BACKUP_STATUS": out.status,
        "GOFR_BACKUP_ARCHIVE": str(out.path) if out.path else "",
        "GOFR_BACKUP_ERROR": out.error or "",
        "GOFR_BACKUP_SIZE_BYTES": str(out.entry["size_bytes"]) if out.entry else "",
    }


_SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "KEY")


def _redacted(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if any(w in k.upper() for w in _SECRET_WORDS) and v:
            out[k] = "***"
        elif k == "paths":
            out[k] = ",".join(f"{p['name']}:{p['path']}" for p in v)
        else:
            out[k] = v
    return out
