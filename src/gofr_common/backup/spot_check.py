"""Source spot check: does an archive hold what the live source says it should?

  the archive's members (name, type, size, mtime: 17 bytes each, sorted, looked up by bisection) and
  its per-file hash index, from one verification pass (the one after a scheduled backup, or one of
  its own) -> one walk of the source (the backup's own walk: PATHS, EXCLUDE) ->
  * missing: entries older than the archive (mtime before its ``created``), not excluded, not in
    it (files the backup reported unreadable, and the -wal/-shm of a database it snapshotted, are
    not counted: they are known);
  * count drift: the share of those old entries the archive lacks, against SPOT_CHECK_TOLERANCE;
  * content drift: a random sample (SPOT_CHECK_SAMPLE percent) of the regular files whose size and
    mtime equal the archive's is read, at most SPOT_CHECK_RATE MB/s, and hashed (BLAKE3): a
    mismatch is bit rot, or a writer that changes data without touching mtime;
  * size drift: a regular file whose mtime equals the archive's but whose size does not (found by
    the stat alone, sample or not): truncated or grown behind its mtime's back.
  -> record ``spot_check`` in the manifest entry and ``last_spot_check`` in the state file.

It reads at most the sample of the source (everything else is a stat), and stops within a chunk
when asked to (SIGTERM).

An incremental (issue 17) is checked against its restore point, the chain's final tree, never
against its own members (one day's changes): a :class:`ChainListing` built from a
:class:`~gofr_common.backup.chain_record.ChainRecord` (shared with the drill of a chain): the names
of the last archive's ``GNU.dumpdir`` listings and its configured paths, each with the type, size,
mtime and BLAKE3 of the newest archive of the chain that stored it.

* ``check-source`` reads every archive of the chain (a broken chain, or one that does not read,
  fails the check naming the link);
* after a scheduled backup, the new archive's verification pass alone: what it stored from its
  members and index, what it did not (unchanged) from its ``.snap`` (type, size, mtime; no hash,
  so the content sample is drawn from what it stored). Without a usable ``.snap``: the whole chain.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import stat
import tarfile
import tempfile
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from blake3 import blake3

from . import chain, incremental, layout, sealed
from .archive_format import read_index
from .chain_record import ChainRecord, raw
from .codecs import CHUNK
from .config import BackupConfig
from .errors import ConfigError, Interrupted, one_line
from .excludes import compile_excludes
from .log import event
from .manifest import Entry, Manifest, choose_archive
from .scan import Found, find_tops, walk
from .schedule import Clock, now_iso
from .sqlite_snapshot import is_sqlite, sibling_base
from .state import update_state
from .verify import Capture, VerifyResult, capturing, verify_archive

SHOWN = 10  # paths kept in a result
_MASK = (1 << 64) - 1
_KINDS = {tarfile.REGTYPE: 1, tarfile.AREGTYPE: 1, tarfile.DIRTYPE: 2, tarfile.SYMTYPE: 3, tarfile.LNKTYPE: 4}
REGULAR = 1


@dataclass
class SpotResult:
    archive: str
    at: str
    ok: bool = False
    error: str | None = None
    seconds: float | None = None
    files: int = 0  # source entries older than the archive: the ones it must hold
    newer: int = 0  # source entries changed since the archive began: not expected in it
    known: int = 0  # not counted: unreadable at backup time, or the -wal/-shm of a snapshotted database
    missing: int = 0
    missing_paths: list[str] = field(default_factory=list)
    sample_percent: float = 0.0
    sampled: int = 0
    sampled_bytes: int = 0
    drift: int | None = 0  # None: not checked (the archive has no per-file hashes)
    drift_paths: list[str] = field(default_factory=list)
    size_drift: int = 0  # same mtime as the archive's, another size
    size_drift_paths: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Listing:
    """Every data member of an archive in 17 bytes (a 64-bit hash of its name, size, mtime, type),
    so that a check of 200,000 files holds a few MB, not a dict of names. Pass it as a verification
    :class:`~gofr_common.backup.verify.Capture`'s ``member``, then :meth:`freeze` it."""

    def __init__(self) -> None:
        self.keys = array("Q")
        self.sizes = array("Q")
        self.mtimes = array("q")
        self.kinds = bytearray()

    def __call__(self, m: tarfile.TarInfo) -> None:
        self.add(m.name.rstrip("/"), _KINDS.get(m.type, 0), max(m.size, 0), int(m.mtime))

    def add(self, name: str, kind: int, size: int, mtime: int) -> None:
        self.keys.append(_key(name))
        self.sizes.append(size)
        self.mtimes.append(mtime)
        self.kinds.append(kind)

    def freeze(self) -> Listing:
        order = sorted(range(len(self.keys)), key=self.keys.__getitem__)
        self.keys = array("Q", (self.keys[i] for i in order))
        self.sizes = array("Q", (self.sizes[i] for i in order))
        self.mtimes = array("q", (self.mtimes[i] for i in order))
        self.kinds = bytearray(self.kinds[i] for i in order)
        return self

    def get(self, name: str) -> tuple[int, int, int] | None:
        """(type, size, mtime) of the member ``name``, or None."""
        k = _key(name)
        i = bisect_left(self.keys, k)
        if i == len(self.keys) or self.keys[i] != k:
            return None
        return self.kinds[i], self.sizes[i], self.mtimes[i]

    def __len__(self) -> int:
        return len(self.keys)


_CHAIN_KINDS = {"f": 1, "d": 2, "l": 3, "h": 4}
_SNAP_KINDS = {incremental.FILE: 1, incremental.DB: 1, incremental.DIR: 2, incremental.LINK: 3}


class ChainListing:
    """The final tree of an incremental's chain, looked up like a :class:`Listing`: a name the
    last archive's ``GNU.dumpdir`` listings (or its configured paths) hold, with the type, size
    and mtime of the newest member of the chain stored at it, and that member's BLAKE3.

    ``snap`` (the after-backup check, which reads only the new archive): the entries of its
    ``.snap``, which give the type, size and mtime of the entries it did not store (unchanged
    since an earlier archive of the chain); those have no hash here, so their content is not
    compared."""

    def __init__(
        self, rec: ChainRecord, archives: list[str], snap: Mapping[str, bytes] | None = None
    ) -> None:
        self.rec, self.archives, self.snap = rec, archives, snap
        self.dbs = {n for n, r in (snap or {}).items() if r[:1] == incremental.DB}
        self.from_snap = 0  # entries whose type, size and mtime came from the .snap (unchanged)
        # the final tree in a Listing (17 bytes an entry, looked up by bisection): one scan of the
        # record, not one query per source entry
        self.listing = Listing()
        for raw_name, _tag, kind, size, mtime in rec.final_rows():
            name = raw_name.decode("utf-8", "surrogateescape")
            if kind is not None:
                self.listing.add(name, _CHAIN_KINDS.get(kind, 0), size, mtime)
                continue
            r = None if snap is None else snap.get(name)
            if r is not None:  # in the final tree, not stored by this archive: unchanged since
                _k, _dev, _ino, size, mtime_ns, *_ = incremental._REC.unpack_from(r)
                self.listing.add(name, _SNAP_KINDS.get(r[:1], 0), size, mtime_ns // 1_000_000_000)
                self.from_snap += 1
            # else: no archive of the chain stored it: not in the listing, so missing
        self.listing.freeze()

    def get(self, name: str) -> tuple[int, int, int] | None:
        return self.listing.get(name)

    def digest(self, name: str) -> str | None:
        """The BLAKE3 (hex) the newest archive that stored ``name`` recorded, or None."""
        got = self.rec.final(raw(name))
        return None if got is None or got[1] is None else got[1][3]

    def close(self) -> None:
        self.rec.close()


@dataclass
class ArchiveView:
    """What a check needs of an archive: its header and end marker, its members, its index."""

    name: str
    meta: dict[str, Any]
    end: dict[str, Any]
    listing: Listing | ChainListing
    index: IO[bytes] | None  # None: the archive has no per-file hashes (format 1), or a chain
    chain: ChainListing | None = None  # an incremental: its chain's final tree (``listing`` too)

    def close(self) -> None:
        if self.chain is not None:
            self.chain.close()


def capture() -> tuple[Capture, Listing, IO[bytes]]:
    """A Capture for a verification pass that also gathers what a spot check needs."""
    listing = Listing()
    index = tempfile.TemporaryFile()
    return Capture(index=index, member=listing), listing, index


def view_of(name: str, cap: Capture, listing: Listing, index: IO[bytes]) -> ArchiveView | None:
    vr = cap.result
    if vr is None or not vr.ok or vr.meta is None or vr.end is None:
        return None
    return ArchiveView(name, vr.meta, vr.end, listing.freeze(), index if cap.has_index else None)


class _Throttle:
    """At most ``rate`` bytes per second, on average since the start; sleeps in short steps so that
    a stop request is seen at once."""

    def __init__(self, rate: float, should_stop: Callable[[], bool]) -> None:
        self.rate, self.should_stop = rate, should_stop
        self.t0 = time.monotonic()
        self.done = 0

    def take(self, n: int) -> None:
        self.done += n
        while True:
            if self.should_stop():
                raise Interrupted("spot check interrupted")
            ahead = self.done / self.rate - (time.monotonic() - self.t0)
            if ahead <= 0:
                return
            time.sleep(min(ahead, 0.1))


def _open_source(path: str) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags | os.O_NOATIME)  # leave the app's atimes alone where we may
    except PermissionError:
        return os.open(path, flags)


def _hash_source(path: str, throttle: _Throttle) -> tuple[bytes | None, int]:
    """(BLAKE3 of a source file, bytes read); None when it changed while read, is gone, or is a
    SQLite database (archived as a snapshot, which is not its bytes)."""
    try:
        fd = _open_source(path)
    except OSError:
        return None, 0
    try:
        before = os.fstat(fd)
        h = blake3()
        got = 0
        first = True
        want = min(CHUNK, before.st_size + 1)  # os.read allocates what it is asked for
        while True:
            b = os.read(fd, want)
            if not b:
                break
            if first and is_sqlite(b[:16]):
                return None, len(b)
            first = False
            h.update(b)
            got += len(b)
            throttle.take(len(b))
        after = os.fstat(fd)
        if (before.st_mtime_ns, before.st_size) != (
            after.st_mtime_ns,
            after.st_size,
        ) or got != before.st_size:
            return None, got
        return h.digest(), got
    except OSError:
        return None, 0
    finally:
        os.close(fd)


def _source_tops(config: BackupConfig, res: SpotResult) -> list[tuple[str, str, str]]:
    """The configured paths as the backup walks them: a PATHS entry that is a symlink is looked at
    through it, as the backup follows it. Links further down are links, as in the backup."""
    found = find_tops(config.paths)
    for name, target in found.followed.items():
        res.notes.append(f"{name} is a symlink to {target}; looked at through it")
    return found.tops


def check(
    config: BackupConfig,
    view: ArchiveView,
    at: str,
    sample_percent: float,
    should_stop: Callable[[], bool] = lambda: False,
    rng: random.Random | None = None,
) -> SpotResult:
    """Compare the live source with ``view`` (see the module's docstring). Memory: the archive's
    listing (17 bytes a member) and 32 bytes a sampled file; nothing per source file."""
    t0 = time.monotonic()
    rng = rng or random.SystemRandom()
    res = SpotResult(archive=view.name, at=at, sample_percent=sample_percent)
    created = datetime.fromisoformat(str(view.meta["created"])).timestamp()
    unreadable = {str(p).rstrip("/") for p in view.end.get("unreadable") or []}
    snapshots = set(view.end.get("sqlite_snapshots") or [])
    excluded = compile_excludes(config.exclude) if config.exclude else None
    ch = view.chain
    dbs = ch.dbs if ch is not None else set()  # a chain's SQLite databases, by name in the archive
    p = sample_percent / 100 if view.index is not None or ch is not None else 0.0
    if view.index is None and ch is None:
        res.drift = None
        res.notes.append("this archive predates per-file hashes (format 1): content drift not checked")
    throttle = _Throttle(config.spot_check_rate * 1e6, should_stop)
    sampled: dict[int, bytes] = {}  # hash of the name in the archive -> BLAKE3 of the source file
    chain_sampled: dict[str, tuple[str, str]] = {}  # a chain's: name -> (source path, BLAKE3 hex)
    skipped = 0
    tops = _source_tops(config, res)
    found = Found()
    for e in walk(tops, found, should_stop, excluded):
        st = e.st
        if st.st_mtime >= created:
            res.newer += 1
            continue
        if e.path in unreadable or sibling_base(e.path) in snapshots or sibling_base(e.arcname) in dbs:
            res.known += 1
            continue
        res.files += 1
        a = view.listing.get(e.arcname)
        if a is None:
            res.missing += 1
            if len(res.missing_paths) < SHOWN:
                res.missing_paths.append(e.path)
            continue
        kind, size, mtime = a
        if (
            kind == REGULAR
            and stat.S_ISREG(st.st_mode)
            and size != st.st_size
            and mtime == int(st.st_mtime)
            and st.st_mtime < created - 1  # not changed in the second the backup began
            and e.path not in snapshots  # a snapshot's size is the snapshot's, not the live file's
            and e.arcname not in dbs
        ):
            res.size_drift += 1
            if len(res.size_drift_paths) < SHOWN:
                res.size_drift_paths.append(e.path)
            continue
        if (
            p > 0
            and kind == REGULAR
            and stat.S_ISREG(st.st_mode)
            and size == st.st_size
            and mtime == int(st.st_mtime)
            and st.st_mtime < created - 1  # not changed in the second the backup began
            and e.path not in snapshots
            and e.arcname not in dbs
            and rng.random() < p
            and (ch is None or ch.digest(e.arcname) is not None)  # a chain's: only files with a hash
        ):
            digest, n = _hash_source(e.path, throttle)  # read at most SPOT_CHECK_RATE
            res.sampled_bytes += n
            if digest is None:
                skipped += 1
            elif ch is not None:
                chain_sampled[e.arcname] = (e.path, digest.hex())
            else:
                sampled[_key(e.arcname)] = digest
    if found.unreadable:
        res.notes.append(
            f"{len(found.unreadable)} source path(s) could not be read now: "
            + ", ".join(found.unreadable[:3])
        )
    if skipped:
        res.notes.append(
            f"{skipped} sampled file(s) not compared: changed while read, gone, or SQLite databases"
        )
    res.sampled = len(sampled) + len(chain_sampled)
    if view.index is not None and sampled:
        _compare(view.index, sampled, {name: path for name, path, _ in tops}, res)
    if ch is not None:
        for name, (path, mine) in chain_sampled.items():
            if ch.digest(name) != mine:
                res.drift = (res.drift or 0) + 1
                if len(res.drift_paths) < SHOWN:
                    res.drift_paths.append(path)
        _chain_notes(ch, res)
    problems = []
    # a configured path the archive holds and the source lacks (an unmounted volume, a deleted
    # directory): the walk finds nothing there, which must not read as "nothing missing"
    present = {name for name, _, _ in tops}
    held = view.meta.get("paths")
    held = held if isinstance(held, dict) else {}
    gone = [s for s in config.paths if s.name in held and s.name not in present]
    if gone:
        problems.append(
            "the archive holds "
            + ", ".join(f"{s.name} ({one_line(str(s.path))})" for s in gone)
            + " but the source has no such path now: is the data volume mounted?"
        )
    if res.missing:
        share = 100 * res.missing / max(res.files, 1)
        line = (
            f"{res.missing} of {res.files} source entries older than the archive are missing from it "
            f"({share:.3g}%, {config.prefix}SPOT_CHECK_TOLERANCE={config.spot_check_tolerance:g}%): "
            + _listed(res.missing_paths, res.missing)
        )
        if share > config.spot_check_tolerance:
            problems.append(line)
        else:
            res.notes.append(line + " (within the tolerance)")
    if res.drift:
        problems.append(
            f"{res.drift} sampled source file(s) differ from the archive although their size and mtime "
            "match (bit rot, or a writer that changes data without touching mtime): "
            + _listed(res.drift_paths, res.drift)
        )
    if res.size_drift:
        problems.append(
            f"{res.size_drift} source file(s) changed size without their mtime changing since the "
            "archive (truncated or grown behind its back): " + _listed(res.size_drift_paths, res.size_drift)
        )
    res.error = "; ".join(problems) or None
    res.ok = res.error is None
    res.seconds = round(time.monotonic() - t0, 3)
    return res


def _chain_notes(ch: ChainListing, res: SpotResult) -> None:
    n = len(ch.archives)
    if ch.snap is None:
        res.notes.append(
            f"checked against the final tree of its chain of {n} archive(s) ({', then '.join(ch.archives)}): "
            "each file as the newest archive that stored it holds it"
        )
    else:
        res.notes.append(
            f"an incremental (chain of {n} archives): checked against the chain's final tree from this "
            f"archive's listings; {ch.from_snap} unchanged entr(ies) it did not store were checked by "
            "presence, size and mtime (its .snap), their content is not sampled (check-source reads "
            "the whole chain)"
        )


def _listed(paths: list[str], n: int) -> str:
    """The first five of ``n`` paths, one line each, and how many more."""
    return ", ".join(one_line(x) for x in paths[:5]) + (f" and {n - 5} more" if n > 5 else "")


def _key(name: str) -> int:
    return hash(name) & _MASK  # this process's hash: made and used within one check


def _compare(index: IO[bytes], sampled: dict[int, bytes], tops: dict[str, str], res: SpotResult) -> None:
    """The sample's hashes against the archive's index, streamed."""
    for name, digest in read_index(index):
        mine = sampled.pop(_key(name), None)
        if mine is not None and mine != bytes.fromhex(digest):
            res.drift = (res.drift or 0) + 1
            if len(res.drift_paths) < SHOWN:
                top, _, rel = name.partition("/")
                res.drift_paths.append(os.path.join(tops.get(top, top), rel) if rel else tops.get(top, top))
        if not sampled:
            break
    if sampled:
        res.notes.append(f"{len(sampled)} sampled file(s) are not in the archive's index")


# -- recording, and the two ways in ---------------------------------------------------------------------------
def record(config: BackupConfig, res: SpotResult, rel: str | None) -> None:
    rec = res.record()
    if rel is not None:
        Manifest(config.backup_dir).set_fields(rel, spot_check=rec)
    update_state(config, lambda st: st.update(last_spot_check=rec))
    if res.ok:
        event(
            "spot_check.done",
            f"source spot check against {res.archive} passed: {res.files} entries, {res.sampled} files "
            f"({res.sampled_bytes / 1e6:.1f} MB) compared",
            seconds=res.seconds,
        )
    else:
        event(
            "spot_check.failed",
            f"source spot check against {res.archive} FAILED: {res.error}",
            level=logging.ERROR,
        )


def _read_archive(
    archive: Path,
    sha: str | None,
    plain_sha: str | None,
    identity: Path | None,
    should_stop: Callable[[], bool],
) -> tuple[ArchiveView | None, VerifyResult | None, IO[bytes]]:
    cap, listing, index = capture()
    with capturing(cap):
        vr = _verify(archive, sha, plain_sha, identity, should_stop)
    return view_of(archive.name, cap, listing, index), vr, index


def capture_chain() -> tuple[Capture, ChainRecord, IO[bytes]]:
    """A Capture for the verification passes over a chain (or over one new incremental) that
    gathers what a spot check of its final tree needs."""
    index = tempfile.TemporaryFile()
    cap = Capture(index=index)
    try:
        rec = ChainRecord(None, cap)
    except BaseException:
        index.close()
        raise
    return cap, rec, index


def increment_view(
    name: str, cap: Capture, rec: ChainRecord, archive: Path, sha256: str | None
) -> ArchiveView | None:
    """The after-backup view of a new incremental, from its own verification pass alone: the chain's
    final tree from its listings, the entries it stored from its members and index, the others
    (unchanged) from its ``.snap``. None (``rec`` closed) when the pass failed or the ``.snap`` does
    not load: the check then reads the whole chain."""
    vr = cap.result
    snap = None
    if vr is not None and vr.ok and vr.meta is not None and vr.end is not None and sha256:
        try:
            snap = incremental.load_snapshot(archive, sha256)
            rec.final_tree((vr.meta.get("paths") or {}).keys())
        except (incremental.SnapshotError, ValueError):
            snap = None
    if snap is None or vr is None or vr.meta is None or vr.end is None:
        rec.close()
        return None
    ch = ChainListing(rec, [name], snap.entries)
    return ArchiveView(name, vr.meta, vr.end, ch, None, chain=ch)


def _check_chain(
    config: BackupConfig,
    archive: Path,
    entry: Entry,
    at: str,
    pct: float,
    identity: Path | None,
    should_stop: Callable[[], bool],
) -> SpotResult:
    """An incremental against the live source: read every archive of its chain (one verification
    pass each, full first), then compare the source with the chain's final tree."""
    res = SpotResult(archive=archive.name, at=at, sample_percent=pct)
    entries = Manifest(config.layout.root).load(config.project, repair=False)
    c = chain.chain_of(entries, entry, config.layout)
    if c.broken is not None:
        res.error = (
            f"{archive.name} is an incremental whose chain is broken: {c.broken}; it cannot be restored, "
            "so the source was not compared with it (the next backup starts a new full)"
        )
        return res
    cap, rec, index = capture_chain()
    n = len(c.archives)
    with index, contextlib.closing(rec), capturing(cap):
        vr: VerifyResult | None = None
        for i, e in enumerate(c.archives, 1):
            path = config.layout.archive(str(e.get("path")))
            vr = _verify(path, e.get("sha256"), e.get("plain_sha256"), identity, should_stop)
            if not vr.ok or vr.meta is None or vr.end is None:
                res.error = (
                    f"cannot read {path.name} (archive {i} of {n} of the chain of {archive.name}): "
                    f"{vr.error or 'unknown error'}"
                )
                return res
        assert vr is not None and vr.meta is not None and vr.end is not None
        try:
            rec.final_tree((vr.meta.get("paths") or {}).keys())
        except ValueError as e:
            res.error = f"cannot read the directory listings of {archive.name}: {e}"
            return res
        end = dict(vr.end)
        end["sqlite_snapshots"] = sorted({str(x) for d in rec.ends for x in d.get("sqlite_snapshots") or []})
        ch = ChainListing(rec, list(rec.archives))
        return check(
            config, ArchiveView(archive.name, vr.meta, end, ch, None, chain=ch), at, pct, should_stop
        )


def _verify(
    archive: Path,
    sha: str | None,
    plain_sha: str | None,
    identity: Path | None,
    should_stop: Callable[[], bool],
) -> VerifyResult:
    if layout.is_sealed(archive.name):
        with open(archive, "rb") as f, sealed.decrypted(f, archive.name, identity) as plain:
            return verify_archive(plain, plain_sha, sidecar=False, should_stop=should_stop)
    return verify_archive(archive, sha, should_stop=should_stop)


def check_source(
    config: BackupConfig,
    clock: Clock,
    name: str | None = None,
    sample_percent: float | None = None,
    identity: Path | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> SpotResult:
    """``gofr-backup check-source``: read the archive (one verification pass), compare, record."""
    identity = identity or config.identity_file
    archive, entry = choose_archive(config.layout, name)
    if layout.is_sealed(archive.name) and identity is None:
        raise ConfigError(
            f"{archive.name} is encrypted (age): reading its members needs --identity FILE "
            f"(or {config.prefix}IDENTITY_FILE)"
        )
    pct = config.spot_check_sample if sample_percent is None else sample_percent
    at = now_iso(clock.now())
    if entry is not None and chain.kind_of(entry) == chain.KIND_INCREMENTAL:
        res = _check_chain(config, archive, entry, at, pct, identity, should_stop)
        record(config, res, entry["path"])
        return res
    e: Entry = entry or Entry()
    view, vr, index = _read_archive(archive, e.get("sha256"), e.get("plain_sha256"), identity, should_stop)
    with index:
        if view is None:
            res = SpotResult(archive=archive.name, at=at, sample_percent=pct)
            res.error = f"cannot read {archive.name}: {vr.error if vr else 'unknown error'}"
        elif view.meta.get("kind") == chain.KIND_INCREMENTAL:  # its header says so; the manifest has no entry
            res = SpotResult(archive=archive.name, at=at, sample_percent=pct)
            res.error = (
                f"{archive.name} is an incremental archive that the manifest does not list, so its chain is "
                "unknown and the source cannot be compared with its restore point; check its chain's "
                "newest listed archive instead"
            )
        else:
            res = check(config, view, at, pct, should_stop)
    record(config, res, entry["path"] if entry else None)
    return res


def after_backup(
    config: BackupConfig,
    clock: Clock,
    entry: Entry,
    view: ArchiveView | None,
    should_stop: Callable[[], bool],
) -> SpotResult:
    """The spot check a scheduled backup runs (SPOT_CHECK_SAMPLE), on what its verification pass
    gathered (or on a pass of its own when VERIFY_AFTER_BACKUP is off)."""
    archive = config.layout.archive(entry["path"])
    at = now_iso(clock.now())
    index = None
    if view is None and chain.kind_of(entry) == chain.KIND_INCREMENTAL:  # no view of its own pass
        res = _check_chain(
            config, archive, entry, at, config.spot_check_sample, config.identity_file, should_stop
        )
        record(config, res, entry["path"])
        return res
    if view is None:
        view, _vr, index = _read_archive(
            archive, entry.get("sha256"), entry.get("plain_sha256"), config.identity_file, should_stop
        )
    try:
        if view is None:
            res = SpotResult(archive=archive.name, at=at, sample_percent=config.spot_check_sample)
            res.error = f"cannot read {archive.name} for the spot check"
        else:
            res = check(config, view, at, config.spot_check_sample, should_stop)
    finally:
        if index is not None:
            index.close()
    record(config, res, entry["path"])
    return res
