"""Restore drill: proof that an archive restores into something the application can use.

  choose (NAME or the newest usable archive) -> drill lock -> clean what a killed drill left ->
  pre-flight space check -> restore into the scratch dir with the real restore engine
  (restore.run_restore, ``--target``: the same checks, staging and extraction as ``restore``) ->
  check the copy against the archive's own record (entry count, bytes, the BLAKE3 of every regular
  file from the index member) -> SQLite ``PRAGMA integrity_check`` (opened read-only) -> JSON files
  under DRILL_JSON_GLOB parse -> the operator's probe (DRILL_COMMAND, GOFR_DRILL_DIR, DRILL_TIMEOUT)
  -> record ``drill`` in the manifest entry and ``last_drill`` in the state file -> remove the
  scratch dir, always.

An incremental is drilled with its chain (issue 17): the restore engine extracts the full, then
every incremental up to it, into the scratch dir; a broken chain (chain.chain_of: a link missing,
failed, another checksum) fails the drill, naming the link. The copy is checked against the chain's
final tree, not against the last archive alone (whose end marker counts and whose index lists only
what it stores): while the restore reads each archive, :class:`_ChainRecord` notes, in a SQLite
file in the scratch dir, every member (the newest archive that stored a path wins) and, from each
archive's index, its BLAKE3; and the last archive's ``GNU.dumpdir`` listings, which name every
entry of the final tree (``Y``/``N`` non-directories, ``D`` subdirectories). See
:func:`_check_chain_copy`.

The scratch dir is ``.gofr-{project}.drill`` in the backup dir, or in DRILL_DIR. A drill that was
killed leaves it behind: the next drill, the next backup and the service's start remove it (under
the drill lock, which a running drill holds), and the state's ``drill_running`` tells ``status``
that it did not finish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from blake3 import blake3

from . import chain, dumpdir, layout
from .archive_format import read_index
from .chain_record import ChainRecord
from .codecs import CHUNK
from .config import BackupConfig
from .errors import BackupError, ConfigError, CouldNotCheck, Interrupted, LocalFault, one_line
from .excludes import compile_excludes
from .fsutil import file_lock, free_bytes, remove_tree, run_lock
from .hooks import run_shell
from .log import event
from .manifest import Entry, Manifest, choose_archive
from .schedule import Clock, now_iso
from .sqlite_snapshot import is_sqlite
from .state import DRILL_RUNNING as RUNNING
from .state import dead_drill, dead_drill_error, read_state, update_state

if TYPE_CHECKING:
    from .restore import RestoreRequest
from .verify import Capture, capturing

JSON_MAX = 64 << 20  # JSON files larger than this are not parsed (their memory), and said so
SHOWN = 5  # names listed in an error


@dataclass
class DrillResult:
    archive: str
    at: str
    ok: bool = False
    error: str | None = None
    # False: the drill could not run for reasons that say nothing about the archive (no room in
    # DRILL_DIR, a scratch dir it cannot make): recorded in the state only, never against the archive
    checked: bool = True
    restore_seconds: float | None = None  # the restore itself: time to a usable copy
    seconds: float | None = None  # the whole drill, checks, probe and cleanup included
    cleanup_seconds: float | None = None  # removing the copy (on a disk, as long as rm -rf takes)
    files: int | None = None  # entries restored (files, directories, links)
    bytes: int | None = None  # bytes of regular files restored
    # an incremental: how many archives its chain has (the full first, this one last); None otherwise
    chain: int | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """What the manifest entry (``drill``) and the state file (``last_drill``) hold."""
        return dataclasses.asdict(self)


class _Failed(Exception):
    """A check of the restored copy failed; the message is the drill's error."""


class _CouldNotRun(Exception):
    """The drill could not run where it was asked to (space, the scratch dir): nothing is known
    about the archive; the message says why."""


def scratch_dir(config: BackupConfig) -> Path:
    return config.layout.drill_dir(config.drill_dir)


# -- choosing the archive -------------------------------------------------------------------------------
def sealed_without_identity(config: BackupConfig, archive: Path, identity: Path | None) -> str | None:
    if not layout.is_sealed(archive.name) or identity is not None:
        return None
    return (
        f"cannot drill {archive.name}: it is encrypted (age) and no identity is configured; a drill "
        f"must decrypt it to prove it restores: give it --identity FILE or {config.prefix}IDENTITY_FILE, "
        f"or turn scheduled drills off with {config.prefix}DRILL_SCHEDULE="
    )


# -- the scratch dir ------------------------------------------------------------------------------------
def clean_stale(config: BackupConfig) -> str | None:
    """Remove what a drill that was killed left behind (its scratch dir, its probe's processes),
    unless a drill is running (it holds the drill lock). Returns a line saying what was removed."""
    scratch = scratch_dir(config)
    if not os.path.lexists(scratch) and dead_drill(config, read_state(config)) is None:
        return None
    try:
        with file_lock(config.layout.drill_lock, 0, "the drill lock"):
            return _reap(config, scratch, _running(config))
    except BackupError:  # a drill is running
        return None


def _running(config: BackupConfig) -> dict[str, Any] | None:
    """(Under the drill lock, so no drill is running.) What the state says was running."""
    r = read_state(config).get(RUNNING)
    return r if isinstance(r, dict) else None


def _reap(config: BackupConfig, scratch: Path, running: dict[str, Any] | None) -> str | None:
    """(Under the drill lock.) Kill the probe of a drill that died, remove its scratch dir."""
    said = []
    if running is not None and running.get("token"):
        killed = kill_probe_leftovers(str(running["token"]))
        if killed:
            said.append(f"killed {killed} process(es) its probe left running")
    if os.path.lexists(scratch):
        size = _du(scratch)
        remove_tree(scratch)
        said.insert(0, f"removed {scratch} ({size / 1e6:.1f} MB)")
    return ("left by a restore drill that did not finish: " + "; ".join(said)) if said else None


def kill_probe_leftovers(token: str) -> int:
    """SIGKILL every process whose environment holds ``GOFR_DRILL_ID=token``: what the probe of a
    drill that died left running (it runs in a session of its own, so it outlives the drill).
    Processes we may not inspect are not ours to kill anyway."""
    needle = f"GOFR_DRILL_ID={token}".encode()
    killed = 0
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if needle in env:
            try:
                os.kill(int(d), 9)
                killed += 1
            except OSError:
                pass
    return killed


def record_dead_drill(config: BackupConfig, clock: Clock) -> bool:
    """A drill that died is a drill that did not pass: record it as failed (the service does this on
    start, so that a drill that kills the service is not simply run again and again)."""
    running = dead_drill(config, read_state(config))
    if running is None:
        return False
    res = DrillResult(
        archive=str(running.get("archive")), at=str(running.get("at")), error=dead_drill_error(running)
    )
    record(config, res, running.get("path"), clear_running=True)
    event("drill.died", res.error or "", level=logging.ERROR)
    return True


def _du(p: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(p):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def preflight(
    config: BackupConfig, scratch: Path, archive: Path, entry: Entry | None, meta: dict[str, Any] | None
) -> None:
    """Refuse a drill that cannot fit, before anything is restored: the archive's bytes plus one
    file-system block per entry (small files take a block each), and for an encrypted archive its
    decrypted copy in the temp dir."""
    src = (entry or {}).get("source_bytes") or (meta or {}).get("source_bytes")
    count = (entry or {}).get("file_count") or (meta or {}).get("file_count") or 0
    if src is None:
        return  # an encrypted archive without a manifest entry: nothing to estimate from
    block = os.statvfs(scratch).f_frsize or 4096
    need = int(src) + int(count) * block + (1 << 20)
    free = free_bytes(scratch)
    if need > free:
        raise BackupError(
            f"not enough space for a drill in {scratch.parent}: restoring {archive.name} needs about "
            f"{need / 1e6:.1f} MB ({int(src) / 1e6:.1f} MB of data + {count} entries x {block} B), but only "
            f"{free / 1e6:.1f} MB is free; free some space or point {config.prefix}DRILL_DIR elsewhere"
        )
    if layout.is_sealed(archive.name):
        tmp = Path(tempfile.gettempdir())
        need = archive.stat().st_size + (1 << 20)
        if need > free_bytes(tmp):
            raise BackupError(
                f"not enough space in {tmp} to decrypt {archive.name} for a drill: it needs "
                f"{need / 1e6:.1f} MB, {free_bytes(tmp) / 1e6:.1f} MB is free (set TMPDIR elsewhere)"
            )


# -- the drill ------------------------------------------------------------------------------------------
def drill(
    config: BackupConfig,
    clock: Clock,
    name: str | None = None,
    identity: Path | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> DrillResult:
    """Drill ``name`` (or the newest usable archive), record the result and return it. User errors
    (a bad name, an encrypted archive without an identity) raise ConfigError before anything is
    written; SIGTERM raises Interrupted (nothing recorded, the scratch dir removed). Every other
    failure is a failed drill, recorded."""
    identity = identity or config.identity_file
    archive, entry = choose_archive(config.layout, name)
    why = sealed_without_identity(config, archive, identity)
    if why:
        raise ConfigError(why)
    lay = config.layout
    rel = entry["path"] if entry else None
    with file_lock(lay.drill_lock, config.lock_timeout, "the drill lock", should_stop=should_stop):
        _reap(config, scratch_dir(config), _running(config))
        at = now_iso(clock.now())
        token = uuid.uuid4().hex
        running = {"pid": os.getpid(), "at": at, "archive": archive.name, "path": rel, "token": token}
        update_state(config, lambda st: st.update({RUNNING: running}))
        event("drill.start", f"restore drill of {archive.name}", archive=archive.name, trigger="drill")
        res = DrillResult(archive=archive.name, at=at)
        t0 = time.monotonic()
        try:
            _run(config, archive, entry, identity, should_stop, res, token)
            res.ok = res.error is None
        except Interrupted:
            event("drill.interrupted", f"restore drill of {archive.name} interrupted; nothing recorded")
            _clear_running(config)
            raise
        except _Failed as e:
            res.error = str(e)
        except _CouldNotRun as e:
            res.error, res.checked = str(e), False
        except OSError as e:  # ours (the scratch dir, the state, a lock): no verdict on the archive
            from .run import failure_text

            res.error, res.checked = failure_text(e), False
        except Exception as e:  # noqa: BLE001 - the drill's boundary: every failure is recorded
            from .run import failure_text

            res.error = failure_text(e)
        finally:
            t1 = time.monotonic()
            event("drill.cleanup", f"removing the restored copy in {scratch_dir(config)}")
            try:
                remove_tree(scratch_dir(config))
            except OSError as e:
                res.notes.append(f"could not remove {scratch_dir(config)}: {e}; the next drill removes it")
            res.cleanup_seconds = round(time.monotonic() - t1, 3)
        res.seconds = round(time.monotonic() - t0, 3)
        res.ok = res.error is None
        record(config, res, rel, clear_running=True)
    _log_result(res)
    return res


def drill_failure(config: BackupConfig, clock: Clock, archive: str, error: str) -> DrillResult:
    """A scheduled drill that could not even start (no archive, no identity): recorded as failed."""
    res = DrillResult(archive=archive, at=now_iso(clock.now()), error=error)
    record(config, res, None)
    _log_result(res)
    return res


def _log_result(res: DrillResult) -> None:
    if res.ok:
        event(
            "drill.done",
            f"restore drill of {res.archive} passed: {res.files} entries, {(res.bytes or 0) / 1e6:.1f} MB "
            f"restored in {res.restore_seconds} s",
            restore_seconds=res.restore_seconds,
            seconds=res.seconds,
        )
    elif not res.checked:  # nothing is known about the archive: say so, as `drill` prints it
        event(
            "drill.failed", f"restore drill of {res.archive} could not run: {res.error}", level=logging.ERROR
        )
    else:
        event("drill.failed", f"restore drill of {res.archive} FAILED: {res.error}", level=logging.ERROR)


def record(config: BackupConfig, res: DrillResult, rel: str | None, clear_running: bool = False) -> None:
    """The same dict in the archive's manifest entry and in the state file (the metrics and the
    report see one drill, not two)."""
    rec = res.record()
    if rel is not None and res.checked:  # a drill that could not run says nothing about the archive
        Manifest(config.backup_dir).set_fields(rel, drill=rec)

    def fn(st: dict[str, Any]) -> None:
        st["last_drill"] = rec
        if clear_running:
            st.pop(RUNNING, None)

    update_state(config, fn)


def _clear_running(config: BackupConfig) -> None:
    update_state(config, lambda st: st.pop(RUNNING, None))


def _restore_request(archive: Path, scratch: Path, identity: Path | None) -> RestoreRequest:
    """The request a drill makes: the archive by path, a copy under the scratch dir. An incomplete
    archive is drilled too (it is what would be restored), where the restore engine asks for that."""
    from .restore import RestoreRequest

    return RestoreRequest(
        name=str(archive), target=scratch, identity=identity, allow_incomplete=True, scratch=True
    )


def _run(
    config: BackupConfig,
    archive: Path,
    entry: Entry | None,
    identity: Path | None,
    should_stop: Callable[[], bool],
    res: DrillResult,
    token: str,
) -> None:
    from .archive_format import read_meta
    from .restore import run_restore

    scratch = scratch_dir(config)
    links = _chain_entries(config, entry, res)  # an incremental's chain, full first (None: not one)
    try:
        remove_tree(scratch)  # left by a drill that was killed (we hold the drill lock)
        scratch.mkdir(mode=0o700, parents=True)
    except OSError as e:
        raise _CouldNotRun(f"cannot make the drill's scratch dir {scratch}: {e.strerror or e}") from None
    meta = None if layout.is_sealed(archive.name) else _meta_or_none(read_meta, archive)
    try:
        preflight(config, scratch, archive, entry if links is None else _chain_estimate(links), meta)
    except BackupError as e:
        raise _CouldNotRun(str(e)) from None
    # wait for a running backup first, so that the time measured is the restore's own
    with run_lock(config.layout, config.lock_timeout, should_stop, readonly_ok=True):
        pass
    try:
        index = tempfile.TemporaryFile(dir=scratch)  # noqa: SIM115 - closed below
    except OSError as e:
        raise _CouldNotRun(f"cannot write in the drill's scratch dir {scratch}: {e.strerror or e}") from None
    cap = Capture(index=index)
    rec: _ChainRecord | None = None
    if links is not None:
        try:
            rec = _ChainRecord(scratch, cap)
        except (OSError, sqlite3.Error) as e:
            index.close()
            raise _CouldNotRun(f"cannot write in the drill's scratch dir {scratch}: {e}") from None
    with index, contextlib.closing(rec or _Nothing()), capturing(cap):
        t0 = time.monotonic()
        try:
            run_restore(config, _restore_request(archive, scratch, identity), should_stop=should_stop)
        except Interrupted:
            raise
        except LocalFault as e:  # writing the copy failed (ENOSPC, EDQUOT, EIO, EROFS, ...): not the archive
            raise _CouldNotRun(f"the restore could not write its copy: {e}") from None
        except CouldNotCheck as e:  # the archive's disk failed a read (EIO): nothing is known about it
            raise _CouldNotRun(f"the restore could not read the archive: {e}") from None
        except BackupError as e:
            raise _Failed(f"the restore failed: {e}") from None
        res.restore_seconds = round(time.monotonic() - t0, 3)
        vr = cap.result
        if vr is None or vr.meta is None or vr.end is None:  # pragma: no cover - run_restore verified it
            raise _Failed("the restore did not read the archive's record")
        names = list((vr.meta.get("paths") or {}).keys())
        try:
            if rec is None:
                _check_copy(
                    config, scratch, names, vr.end, index if cap.has_index else None, should_stop, res
                )
            else:
                assert links is not None
                rec.flush()
                if rec.passes != len(links):  # pragma: no cover - run_restore restores the same chain
                    raise _Failed(f"the restore read {rec.passes} archive(s); the chain has {len(links)}")
                res.notes.append(
                    f"restored with its chain of {len(links)} archives: " + ", then ".join(rec.archives)
                )
                incomplete = rec.incomplete or any(e.get("complete") is False for e in links)
                _check_chain_copy(config, scratch, names, rec, should_stop, res, incomplete)
        except (
            OSError,
            sqlite3.Error,
        ) as e:  # reading our own copy back (EIO on the scratch disk): not the archive
            raise _CouldNotRun(f"cannot read the restored copy in {scratch} back: {e}") from None
    if config.drill_command:
        _probe(config, scratch, archive, should_stop, res, token)


def _chain_entries(config: BackupConfig, entry: Entry | None, res: DrillResult) -> list[Entry] | None:
    """The chain of an incremental (its manifest entries, full first), or None for any other archive.
    A broken chain fails the drill here, naming the broken link: the archives are at fault."""
    if entry is None or chain.kind_of(entry) != chain.KIND_INCREMENTAL:
        return None
    entries = Manifest(config.layout.root).load(config.project, repair=False)
    c = chain.chain_of(entries, entry, config.layout)
    if c.broken is not None:
        raise _Failed(
            f"its chain is broken: {c.broken}; it cannot be restored (restore points after the broken link "
            "are lost; the next backup starts a new full)"
        )
    res.chain = len(c.archives)
    return c.archives


def _chain_estimate(links: list[Entry]) -> Entry:
    """What a chain's restore needs, for the pre-flight: an estimate, its largest archive (usually
    its full); a tree that grew since makes the restore stop midway instead (could not run)."""
    est = Entry()
    est["source_bytes"] = max(int(e.get("source_bytes") or 0) for e in links)
    est["file_count"] = max(int(e.get("file_count") or 0) for e in links)
    return est


class _Nothing:
    def close(self) -> None:
        pass


def _raw(name: str) -> bytes:
    """A member's or an index line's name as the bytes on disk (tarfile decodes with surrogateescape)."""
    return name.encode("utf-8", "surrogateescape")


_ChainRecord = ChainRecord  # what the restore's passes over a chain saw (chain_record.py)


def _meta_or_none(read: Callable[[Path], dict[str, Any]], archive: Path) -> dict[str, Any] | None:
    try:
        return read(archive)
    except BackupError:
        return None  # the restore says what is wrong with it


# -- checking the restored copy ---------------------------------------------------------------------------
def _walk(
    root: Path, names: list[str], should_stop: Callable[[], bool]
) -> Iterator[tuple[str, os.stat_result]]:
    """(relative name, lstat) of every entry under ``root/<name>``, without following symlinks; a
    directory we may not list (its archived mode) is made ours to read first."""
    for n in names:
        top = root / n
        try:
            st = os.lstat(top)
        except FileNotFoundError:
            continue
        yield n, st
        if not stat.S_ISDIR(st.st_mode):
            continue
        stack = [(str(top), n)]
        while stack:
            if should_stop():
                raise Interrupted("interrupted while checking the restored copy")
            d, rel = stack.pop()
            try:
                items = _listdir(d)
            except FileNotFoundError:
                continue
            for name, est in items:
                r = f"{rel}/{name}"
                yield r, est
                if stat.S_ISDIR(est.st_mode):
                    stack.append((f"{d}/{name}", r))


def _listdir(d: str) -> list[tuple[str, os.stat_result]]:
    for attempt in (0, 1):
        try:
            with os.scandir(d) as it:
                return sorted((e.name, e.stat(follow_symlinks=False)) for e in it)
        except PermissionError:
            if attempt:
                raise
            os.chmod(d, stat.S_IMODE(os.lstat(d).st_mode) | stat.S_IRWXU)
    return []  # pragma: no cover


def _open(path: str) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags)
    except PermissionError:  # an archived mode without read permission: ours to change in the copy
        os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | stat.S_IRUSR)
        return os.open(path, flags)


def _shown(items: list[str], total: int) -> str:
    more = f" and {total - len(items)} more" if total > len(items) else ""
    return ", ".join(one_line(i) for i in items) + more


def _check_copy(
    config: BackupConfig,
    scratch: Path,
    names: list[str],
    end: dict[str, Any],
    index: IO[bytes] | None,
    should_stop: Callable[[], bool],
    res: DrillResult,
) -> None:
    """Entry count and bytes against the end marker; every regular file's BLAKE3 against the index;
    SQLite databases; JSON files. Raises _Failed with every problem found (the first few named)."""
    problems: list[str] = []
    files = regular = nbytes = 0
    linked: set[tuple[int, int]] = set()
    for _rel, st in _walk(scratch, names, should_stop):
        files += 1
        if stat.S_ISREG(st.st_mode):
            regular += 1
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in linked:
                    continue
                linked.add((st.st_dev, st.st_ino))
            nbytes += st.st_size
    res.files, res.bytes = files, nbytes
    want_files, want_bytes = end.get("file_count"), end.get("source_bytes")
    if want_files is not None and files != want_files:
        problems.append(f"the restored copy holds {files} entries, the archive's record says {want_files}")
    if want_bytes is not None and nbytes != want_bytes:
        problems.append(
            f"the restored copy holds {nbytes} bytes of files, the archive's record says {want_bytes}"
        )
    if want_bytes is None:
        res.notes.append("the archive's record has no byte count: bytes not compared")

    data = _DataChecks(config)
    json_match, wants_json, look = data.json_match, data.wants_json, data.look

    if index is not None:
        differ: list[str] = []
        absent: list[str] = []
        hashed = n_differ = n_absent = 0
        try:
            for rel, digest in read_index(index):
                if should_stop():
                    raise Interrupted("interrupted while hashing the restored copy")
                got = _hash(f"{scratch}/{rel}", rel, wants_json, look)
                hashed += 1
                if got is None:
                    n_absent += 1
                    if len(absent) < SHOWN:
                        absent.append(rel)
                elif got != digest:
                    n_differ += 1
                    if len(differ) < SHOWN:
                        differ.append(rel)
        except ValueError as e:
            problems.append(f"the archive's index is damaged: {e}")
        res.checks["hashes"] = hashed
        if n_differ:
            problems.append(
                f"{n_differ} restored file(s) differ from the archive's record (BLAKE3): {_shown(differ, n_differ)}"
            )
        if n_absent:
            problems.append(
                f"{n_absent} file(s) of the archive's record are not regular files in the restored copy: "
                f"{_shown(absent, n_absent)}"
            )
        want_index = end.get("index_entries")
        if want_index is not None and hashed != want_index:
            problems.append(f"the archive's index holds {hashed} entries, its end marker says {want_index}")
        if hashed != regular:
            problems.append(f"the restored copy holds {regular} files, the archive's index lists {hashed}")
    else:
        if end.get("index"):
            problems.append(
                f"the archive's end marker names an index ({end['index']}) that the archive lacks"
            )
        res.checks["hashes"] = None
        res.notes.append(
            "this archive predates per-file hashes (format 1): its entry count and bytes were checked, "
            "file contents were not compared"
        )
        for rel, st in _walk(scratch, names, should_stop):
            if stat.S_ISREG(st.st_mode) and (st.st_size >= 512 or json_match is not None):
                _hash(f"{scratch}/{rel}", rel, wants_json, look, head_only=True)

    data.finish(scratch, should_stop, res, problems)
    if problems:
        raise _Failed("; ".join(problems))


class _DataChecks:
    """The application-data checks of a restored copy: SQLite databases (found by their header
    while each file is hashed) and the JSON files DRILL_JSON_GLOB names."""

    def __init__(self, config: BackupConfig) -> None:
        self.json_match = compile_excludes(config.drill_json_glob) if config.drill_json_glob else None
        self.dbs: list[str] = []
        self.parsed = 0
        self.json_bad: list[str] = []
        self.json_big: list[str] = []

    def look(self, rel: str, head: bytes, body: bytes | None) -> None:
        if is_sqlite(head):
            self.dbs.append(rel)
        if body is not None:
            try:
                json.loads(body)
                self.parsed += 1
            except ValueError as e:
                self.json_bad.append(f"{rel} ({e})")

    def wants_json(self, rel: str, size: int) -> bool:
        if self.json_match is None or not self.json_match(rel, False):
            return False
        if size > JSON_MAX:
            self.json_big.append(rel)
            return False
        return True

    def finish(
        self, scratch: Path, should_stop: Callable[[], bool], res: DrillResult, problems: list[str]
    ) -> None:
        res.checks["sqlite"] = len(self.dbs)
        for rel in self.dbs:
            if should_stop():
                raise Interrupted("interrupted while checking SQLite databases")
            err = sqlite_check(scratch / rel, should_stop)
            if err:
                problems.append(f"{one_line(rel)}: {err}")
        if self.json_match is not None:
            res.checks["json"] = self.parsed
            if self.json_bad:
                problems.append(
                    f"{len(self.json_bad)} JSON file(s) do not parse: "
                    f"{_shown(self.json_bad[:SHOWN], len(self.json_bad))}"
                )
            if self.json_big:
                res.notes.append(
                    f"{len(self.json_big)} JSON file(s) larger than {JSON_MAX >> 20} MB were not parsed: "
                    + _shown(self.json_big[:SHOWN], len(self.json_big))
                )


class _Tally:
    """A count of one kind of problem, and the first few names."""

    def __init__(self) -> None:
        self.n = 0
        self.names: list[str] = []

    def add(self, name: str) -> None:
        self.n += 1
        if len(self.names) < SHOWN:
            self.names.append(name)

    def said(self) -> str:
        return _shown(self.names, self.n)


def _check_chain_copy(
    config: BackupConfig,
    scratch: Path,
    names: list[str],
    rec: _ChainRecord,
    should_stop: Callable[[], bool],
    res: DrillResult,
    incomplete: bool,
) -> None:
    """An incremental's restored copy against its chain's final tree:

    * the tree: each directory of the last archive holds exactly what its ``GNU.dumpdir`` lists
      (``D`` a directory, ``Y``/``N`` not one), and each listed subdirectory has a listing of its
      own; so, from the configured paths down, the copy holds the final tree's entries, no more;
    * every ``Y``/``N`` entry was stored by some archive of the chain (an ``N`` never stored is a
      chain that cannot hold it);
    * every regular file of the copy: the BLAKE3 the newest archive that stored it recorded (a
      file no archive stored as a regular file fails);
    * the entry count and the bytes: against those figures of the final tree (sizes from the
      newest member of each path; a hard link adds none);
    * SQLite and JSON as for any archive.

    In an incomplete chain (the backup could not read everything), entries the copy lacks are
    notes, not failures: the drill proves what the chain holds."""
    problems: list[str] = []
    missing, extra, wrong, never, unlisted = _Tally(), _Tally(), _Tally(), _Tally(), _Tally()
    want_files = want_bytes = 0
    root = os.fsencode(scratch)

    def expect_file(rel: bytes) -> None:
        nonlocal want_files, want_bytes
        want_files += 1
        row = rec.row(rel)
        if row is None or row[0] == "d":
            never.add(os.fsdecode(rel))
        elif row[0] == "f":
            want_bytes += row[1]

    for top in names:
        raw = _raw(top)
        try:
            st = os.lstat(root + b"/" + raw)
        except FileNotFoundError:
            missing.add(top)
            continue
        if stat.S_ISDIR(st.st_mode):
            if not rec.listed(raw):
                (missing if incomplete else unlisted).add(top)
        else:
            expect_file(raw)
    for rel, listing in rec.dirs():
        if should_stop():
            raise Interrupted("interrupted while checking the restored copy")
        want_files += 1
        try:
            on_disk: dict[bytes, os.stat_result | None] = dict(_listdir_raw(root + b"/" + rel))
        except (FileNotFoundError, NotADirectoryError):
            missing.add(os.fsdecode(rel))
            continue
        try:
            entries = dumpdir.decode(listing)
        except ValueError as e:  # pragma: no cover - the restore refuses a malformed listing
            problems.append(f"the listing of {one_line(os.fsdecode(rel))} is malformed: {e}")
            continue
        for tag, name in entries:
            child = rel + b"/" + name
            got = on_disk.pop(name, None)
            if tag == dumpdir.DIRECTORY:
                if not rec.listed(child):
                    (missing if incomplete else unlisted).add(os.fsdecode(child))
                if got is not None and not stat.S_ISDIR(got.st_mode):
                    wrong.add(os.fsdecode(child))
            elif got is not None or not incomplete:  # (a file the backup could not read: missing)
                expect_file(child)
                if got is not None and stat.S_ISDIR(got.st_mode):
                    wrong.add(os.fsdecode(child))
            if got is None:
                missing.add(os.fsdecode(child))
        for name in on_disk:
            extra.add(os.fsdecode(rel + b"/" + name))

    # the copy, file by file: counts, bytes, and every regular file's hash
    data = _DataChecks(config)
    differ, unstored, unhashed = _Tally(), _Tally(), _Tally()
    files = nbytes = hashed = 0
    linked: set[tuple[int, int]] = set()
    for rel_s, st in _walk(scratch, names, should_stop):
        files += 1
        if not stat.S_ISREG(st.st_mode):
            continue
        if st.st_nlink > 1:
            if (st.st_dev, st.st_ino) not in linked:
                linked.add((st.st_dev, st.st_ino))
                nbytes += st.st_size
        else:
            nbytes += st.st_size
        row = rec.row(_raw(rel_s))
        digest = _hash(f"{scratch}/{rel_s}", rel_s, data.wants_json, data.look)
        if row is None or row[0] not in ("f", "h"):
            unstored.add(rel_s)
        elif row[2] is None:
            unhashed.add(rel_s)
        else:
            hashed += 1
            if digest != row[2]:
                differ.add(rel_s)
    res.files, res.bytes = files, nbytes
    res.checks["hashes"] = hashed
    res.checks["tree"] = want_files

    if differ.n:
        problems.append(
            f"{differ.n} restored file(s) differ from the record of the newest archive of the chain that "
            f"stored them (BLAKE3): {differ.said()}"
        )
    if unstored.n:
        problems.append(
            f"{unstored.n} restored file(s) that no archive of the chain stored as a regular file: {unstored.said()}"
        )
    if extra.n:
        problems.append(
            f"{extra.n} restored entr(ies) that the chain's final tree does not hold (the last archive's "
            f"directory listings): {extra.said()}"
        )
    if wrong.n:
        problems.append(
            f"{wrong.n} restored entr(ies) of the wrong type (a directory where the listing says a file, or "
            f"the reverse): {wrong.said()}"
        )
    if never.n:
        problems.append(
            f"{never.n} entr(ies) of the final tree that no archive of the chain stored: {never.said()}"
        )
    if unlisted.n:
        problems.append(
            f"{unlisted.n} director(ies) of the final tree without a member in the last archive: {unlisted.said()}"
        )
    if missing.n:
        said = f"{missing.n} entr(ies) of the chain's final tree missing from the restored copy: {missing.said()}"
        if incomplete:
            res.notes.append(f"{said} (the chain is incomplete: the backup could not read everything)")
        else:
            problems.append(said)
    if unhashed.n:
        res.notes.append(f"{unhashed.n} file(s) have no hash in their archive's index: {unhashed.said()}")
    if not incomplete and files != want_files:
        problems.append(f"the restored copy holds {files} entries, the chain's final tree {want_files}")
    if not incomplete and nbytes != want_bytes:
        problems.append(
            f"the restored copy holds {nbytes} bytes of files, the chain's final tree {want_bytes}"
        )
    elif incomplete:
        res.notes.append("the chain is incomplete: its entry count and bytes were not compared")
    data.finish(scratch, should_stop, res, problems)
    if problems:
        raise _Failed("; ".join(problems))


def _listdir_raw(d: bytes) -> list[tuple[bytes, os.stat_result]]:
    for attempt in (0, 1):
        try:
            with os.scandir(d) as it:
                return [(e.name, e.stat(follow_symlinks=False)) for e in it]
        except PermissionError:
            if attempt:
                raise
            os.chmod(d, stat.S_IMODE(os.lstat(d).st_mode) | stat.S_IRWXU)
    return []  # pragma: no cover


_BUF = bytearray(CHUNK)  # one read buffer for every file a drill hashes (not 1 MiB per file)


def _hash(
    path: str,
    rel: str,
    wants_json: Callable[[str, int], bool],
    look: Callable[[str, bytes, bytes | None], None],
    head_only: bool = False,
) -> str | None:
    """The BLAKE3 of a restored regular file (None: not there, or not a regular file), looking at
    its head (SQLite) and, when DRILL_JSON_GLOB wants it, its body (JSON) on the way."""
    try:
        fd = _open(path)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        body: bytearray | None = bytearray() if wants_json(rel, st.st_size) else None
        h = blake3()
        head = b""
        view = memoryview(_BUF)
        while n := os.readv(fd, [_BUF]):
            chunk = view[:n]
            if not head:
                head = bytes(chunk[:16])
                if head_only and body is None:
                    break
            h.update(chunk)
            if body is not None:
                body += chunk
        look(rel, head, bytes(body) if body is not None else None)
        return h.hexdigest()
    finally:
        os.close(fd)


def sqlite_check(path: Path, should_stop: Callable[[], bool] = lambda: False) -> str | None:
    """None when the database opens read-only and passes ``PRAGMA integrity_check``, else why not."""
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    except sqlite3.Error as e:
        return f"SQLite database does not open read-only: {e}"
    try:
        conn.set_progress_handler(lambda: 1 if should_stop() else 0, 10_000)
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        if rows != [("ok",)]:
            first = "; ".join(" ".join(str(r[0]).split()) for r in rows[:3])
            return f"SQLite PRAGMA integrity_check failed: {first}" + (
                f" (and {len(rows) - 3} more)" if len(rows) > 3 else ""
            )
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return None
    except sqlite3.Error as e:
        if should_stop():
            raise Interrupted("interrupted while checking a SQLite database") from None
        return f"SQLite database does not read: {e}"
    finally:
        conn.close()


def _probe(
    config: BackupConfig,
    scratch: Path,
    archive: Path,
    should_stop: Callable[[], bool],
    res: DrillResult,
    token: str,
) -> None:
    env = {
        **os.environ,
        "GOFR_DRILL_ID": token,  # how a next run finds what this probe left if the drill is killed
        "GOFR_DRILL_DIR": str(scratch),
        "GOFR_DRILL_ARCHIVE": archive.name,
        "GOFR_BACKUP_PROJECT": config.project,
    }
    event("drill.probe.start", f"drill probe: running {config.drill_command!r}")
    r = run_shell(
        config.drill_command,
        config.drill_timeout,
        env,
        should_stop,
        what="the drill probe (DRILL_COMMAND)",
        timeout_var="DRILL_TIMEOUT",
        kill_leftovers=True,
        cwd=str(scratch),
    )
    # what it started in a session of its own (setsid) escapes the process group: found by its
    # GOFR_DRILL_ID, as after a drill that was killed
    stray = kill_probe_leftovers(token)
    if stray:
        event(
            "drill.probe.leftovers",
            f"killed {stray} process(es) the probe left running",
            level=logging.WARNING,
        )
    for line in r.lines:
        event("drill.probe.output", f"drill probe: {line}")
    res.checks["probe"] = {"exit": r.returncode, "seconds": r.seconds, "output": r.lines[-5:]}
    if r.reason:
        if should_stop():
            raise Interrupted("interrupted while the drill probe ran")
        last = f": {r.lines[-1]}" if r.lines else ""
        raise _Failed(f"{r.reason}{last}")
