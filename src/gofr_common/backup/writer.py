"""Write one archive: one streaming pass that reads each file once and compresses, hashes and
writes it, as ``<name>.partial``, fsynced, renamed only when complete, with its ``.sha256``.
Each regular file's content is also hashed (BLAKE3) on its way into the archive; the hashes go to a
temp file and, after the data, into the archive's index member (archive_format.INDEX_NAME).

Live data: files up to 8 MiB are re-read when they change while being read; larger ones are
streamed once (grown: archived as read; shrunk: zero-padded, never corrupt). SQLite databases,
found by their header, are archived as consistent snapshots (sqlite_snapshot.py).
"""

from __future__ import annotations

import grp
import hashlib
import io
import os
import pwd
import shutil
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

from blake3 import blake3

from . import layout, progress, sqlite_snapshot
from .archive_format import END_NAME, INDEX_HASH, INDEX_NAME, META_NAME, build_meta, index_line
from .codecs import CHUNK, CODECS, close_after_error
from .config import BackupConfig
from .errors import BackupError, Interrupted, NoDataError
from .excludes import compile_excludes
from .fsutil import FILE_MODE, free_bytes, fsync_dir, json_text, remove_quietly
from .manifest import Entry, created_of
from .scan import Found, ScanEntry, Survey, backup_dir_ids, survey, walk
from .tarstream import TarStream

SMALL_FILE = 8 << 20  # read whole, and re-read if it changed while being read
CHANGE_RETRIES = 3


class HashingWriter(io.RawIOBase):
    """The bottom of the pipeline: hashes and counts every byte on its way to the file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        view = memoryview(b)
        self.sha.update(view)
        n = len(view)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.size += n
        return n


class _Sink(io.RawIOBase):
    """What the tar stream writes into: the codec stream."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.stream.write(b)
        return len(b)


class _ExactReader(io.RawIOBase):
    """Yields exactly ``size`` bytes from ``fd``: zero-padded if the file shrank, cut if it grew;
    ``hash`` is the BLAKE3 of what it yielded."""

    def __init__(self, fd: int, size: int, should_stop: Callable[[], bool]) -> None:
        self.fd = fd
        self.left = size
        self.short = False
        self.error: str | None = None
        self.should_stop = should_stop
        self.hash = blake3()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.should_stop():
            raise Interrupted("interrupted while archiving")
        if n < 0 or n > self.left:
            n = self.left
        if n == 0:
            return b""
        data = b""
        if not self.short:
            try:
                data = os.read(self.fd, min(n, CHUNK))
            except OSError as e:  # the header is already written: keep the tar stream valid
                self.error = e.strerror or str(e)
        if not data:
            self.short = True
            data = bytes(min(n, CHUNK))
        self.left -= len(data)
        self.hash.update(data)
        return data


class _HashedFile:
    """A file read through, hashed on the way (a SQLite snapshot on its way into the archive)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.hash = blake3()

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        self.hash.update(data)
        return data


@dataclass
class WriteResult:
    path: Path
    filename: str
    size_bytes: int
    sha256: str
    file_count: int
    source_bytes: int
    duration_s: float
    warnings: list[str]
    unreadable: list[str]
    missing: list[str]
    meta: dict[str, Any]
    sqlite_snapshots: list[str] = field(default_factory=list)
    excluded: int = 0
    end: dict[str, Any] = field(default_factory=dict)  # the end marker as written

    @property
    def complete(self) -> bool:
        return not self.unreadable


class _Names:
    """uid/gid -> name, cached (one lookup per id, not per file)."""

    def __init__(self) -> None:
        self.users: dict[int, str] = {}
        self.groups: dict[int, str] = {}

    def user(self, uid: int) -> str:
        if uid not in self.users:
            try:
                self.users[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self.users[uid] = ""
        return self.users[uid]

    def group(self, gid: int) -> str:
        if gid not in self.groups:
            try:
                self.groups[gid] = grp.getgrgid(gid).gr_name
            except KeyError:
                self.groups[gid] = ""
        return self.groups[gid]


def _json_member(tar: TarStream, name: str, obj: dict[str, Any]) -> None:
    data = json_text(obj, indent=1).encode()
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = 0o600
    ti.mtime = int(time.time())
    tar.add(ti, data)


def _index_member(tar: TarStream, index: IO[bytes]) -> None:
    """The per-file hashes, after the data and before the end marker."""
    index.flush()
    ti = tarfile.TarInfo(INDEX_NAME)
    ti.size = index.tell()
    ti.mode = 0o600
    ti.mtime = int(time.time())
    index.seek(0)
    tar.add_stream(ti, index)


class ArchiveWriter:
    """Writes one archive. Use :func:`write_archive`."""

    def __init__(
        self,
        tar: TarStream,
        should_stop: Callable[[], bool],
        sqlite_tmp: Path | None = None,
        index: IO[bytes] | None = None,
    ) -> None:
        self.tar = tar
        self.index = index  # one line per regular file (and hard link): its content's BLAKE3
        self.indexed = 0
        self.should_stop = should_stop
        self.sqlite_tmp = sqlite_tmp  # None: SQLite snapshots are off (byte copies)
        self.snapshotted: list[str] = []  # source paths of databases archived as snapshots
        self.snapshotted_set: set[str] = set()
        self.names = _Names()
        # (dev, inode, top-level name) -> (first arcname, its content's hash): hard links never
        # cross _PATHS names, because restore stages each name on its own (and --only may select one)
        self.links: dict[tuple[int, int, str], tuple[str, str]] = {}
        self.count = 0
        self.bytes = 0
        self.warnings: list[str] = []
        self.unreadable: list[str] = []

    def _indexed(self, arcname: str, digest: str) -> None:
        if self.index is not None:
            self.index.write(index_line(arcname, digest))
            self.indexed += 1

    def _info(self, arcname: str, st: os.stat_result) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(arcname)
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid, ti.gid = st.st_uid, st.st_gid
        ti.uname, ti.gname = self.names.user(st.st_uid), self.names.group(st.st_gid)
        ti.mtime = int(st.st_mtime)
        return ti

    def add(self, e: ScanEntry) -> None:
        if self.should_stop():
            raise Interrupted("interrupted while archiving")
        mode = e.st.st_mode
        if stat.S_ISDIR(mode):
            ti = self._info(e.arcname, e.st)
            ti.type = tarfile.DIRTYPE
            self.tar.add(ti)
        elif stat.S_ISLNK(mode):
            try:
                target = os.readlink(e.path)
            except FileNotFoundError:
                self.warnings.append(f"{e.path} vanished before it was read; skipped")
                return
            top = e.arcname.split("/", 1)[0]
            resolved = os.path.normpath(os.path.join(os.path.dirname(e.arcname), target))
            if os.path.isabs(target) or not (resolved == top or resolved.startswith(top + "/")):
                self.warnings.append(
                    f"{e.path} is a symlink to {target!r}, outside its path: it is archived and restored "
                    "as a link, never followed (what it points at is not in this backup)"
                )
            ti = self._info(e.arcname, e.st)
            ti.type = tarfile.SYMTYPE
            ti.linkname = target
            self.tar.add(ti)
        else:
            base = sqlite_snapshot.sibling_base(e.path)
            if base is not None and base in self.snapshotted_set:
                return  # -wal/-shm/-journal of a snapshotted database: the snapshot holds its commits
            try:
                if not self._add_file(e):
                    return
            except _SourceReadError as ex:
                # EIO and friends, before the member's header was written: skip this file only
                self.unreadable.append(e.path)
                self.warnings.append(f"{e.path} could not be read ({ex}); skipped")
                return
        self.count += 1

    def _add_file(self, e: ScanEntry) -> bool:
        key = (e.st.st_dev, e.st.st_ino, e.arcname.split("/", 1)[0])
        if e.st.st_nlink > 1 and key in self.links:
            ti = self._info(e.arcname, e.st)
            ti.type = tarfile.LNKTYPE
            ti.linkname, digest = self.links[key]
            self.tar.add(ti)
            self._indexed(e.arcname, digest)
            return True
        db_tried = False  # a failed snapshot is tried once, then the bytes are archived
        for attempt in range(CHANGE_RETRIES + 1):
            try:
                fd = os.open(e.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                self.warnings.append(f"{e.path} vanished before it was read; skipped")
                return False
            except PermissionError:
                self.unreadable.append(e.path)
                return False
            except OSError as ex:  # ELOOP: replaced by a symlink since the scan
                self.warnings.append(f"{e.path} could not be opened ({ex.strerror}); skipped")
                return False
            try:
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode):
                    self.warnings.append(f"{e.path} is no longer a regular file; skipped")
                    return False
                small = before.st_size <= SMALL_FILE
                # SQLite databases are found by their header: for a small file it is in the data
                # read anyway, for a large one it costs one 16-byte pread
                maybe_db = self.sqlite_tmp is not None and before.st_size >= 512 and not db_tried
                if maybe_db and not small and sqlite_snapshot.is_sqlite(_pread(fd, 16)):
                    db_tried = True
                    if self._add_sqlite(e, before):
                        return True
                ti = self._info(e.arcname, before)
                if small:
                    try:
                        data = _read_all(fd, before.st_size)
                    except OSError as ex:
                        raise _SourceReadError(ex.strerror or str(ex)) from None
                    if maybe_db and sqlite_snapshot.is_sqlite(bytes(data[:16])):
                        db_tried = True
                        if self._add_sqlite(e, before):
                            return True
                    after = os.fstat(fd)
                    if _changed(before, after, len(data)) and attempt < CHANGE_RETRIES:
                        continue  # read it again
                    ti.size = len(data)
                    if _changed(before, after, len(data)):
                        self.warnings.append(
                            f"{e.path} kept changing while read ({CHANGE_RETRIES + 1} tries); archived as read"
                        )
                    self.tar.add(ti, data)
                    digest = blake3(data).hexdigest()
                else:
                    ti.size = before.st_size
                    reader = _ExactReader(fd, before.st_size, self.should_stop)
                    self.tar.add_stream(ti, reader)
                    digest = reader.hash.hexdigest()
                    after = os.fstat(fd)
                    if reader.error:
                        self.unreadable.append(e.path)
                        self.warnings.append(
                            f"{e.path}: read error ({reader.error}); the rest of the file is zero-filled"
                        )
                    elif reader.short:
                        self.warnings.append(
                            f"{e.path} shrank while read; archived as read, zero-padded to {before.st_size} bytes"
                        )
                    elif _changed(before, after, before.st_size):
                        self.warnings.append(f"{e.path} changed while read; archived as read")
                self.bytes += ti.size
                progress.advance(ti.size)
                self._indexed(e.arcname, digest)
                if e.st.st_nlink > 1:
                    self.links[key] = (e.arcname, digest)
                return True
            finally:
                os.close(fd)
        return False  # pragma: no cover - loop always returns

    def _add_sqlite(self, e: ScanEntry, st: os.stat_result) -> bool:
        """Archive a consistent snapshot in place of the live file. False: fall back to bytes."""
        assert self.sqlite_tmp is not None
        dst = self.sqlite_tmp / f"snapshot-{len(self.snapshotted)}.db"
        try:
            how = sqlite_snapshot.snapshot(Path(e.path), dst)
        except sqlite_snapshot.SnapshotError as ex:
            self.warnings.append(
                f"{e.path}: SQLite snapshot failed ({ex}); archived as a byte copy, which may be torn"
            )
            return False
        try:
            ti = self._info(e.arcname, st)
            with open(dst, "rb") as f:
                ti.size = os.fstat(f.fileno()).st_size
                src = _HashedFile(f)
                self.tar.add_stream(ti, src)
        finally:
            dst.unlink(missing_ok=True)
        self.bytes += ti.size
        self._indexed(e.arcname, src.hash.hexdigest())
        self.snapshotted.append(e.path)
        self.snapshotted_set.add(e.path)
        if how == "copied":
            self.warnings.append(f"{e.path}: no writer had the database open; snapshot taken from a copy")
        return True


class _SourceReadError(Exception):
    """A source file failed to read before its member header was written (safe to skip)."""


def _pread(fd: int, n: int) -> bytes:
    try:
        return os.pread(fd, n, 0)
    except OSError as e:
        raise _SourceReadError(e.strerror or str(e)) from None


def _read_all(fd: int, size: int) -> bytes | memoryview:
    """Up to ``size`` bytes. A larger file is read into one preallocated buffer, so reading it
    costs its size in memory once, not twice (chunks plus their join)."""
    if size <= CHUNK:
        chunks = []
        want = size
        while want > 0:
            b = os.read(fd, want)
            if not b:
                break
            chunks.append(b)
            want -= len(b)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    view = memoryview(bytearray(size))
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    return view[:got]


def _changed(before: os.stat_result, after: os.stat_result, got: int) -> bool:
    return after.st_mtime_ns != before.st_mtime_ns or after.st_size != before.st_size or got != before.st_size


def no_data_error(config: BackupConfig) -> NoDataError:
    tried = ", ".join(f"{p.name}={p.path}" for p in config.paths)
    if not config.data_dir.is_dir():
        return NoDataError(
            f"No data found to backup: the data directory {config.data_dir} does not exist; mount the "
            f"data volume there or set {config.prefix}DATA_DIR (paths tried: {tried})"
        )
    return NoDataError(f"No data found to backup: none of the configured paths exist ({tried})")


def emptied_error(config: BackupConfig, emptied: list[tuple[str, str, str]]) -> BackupError:
    """EXCLUDE took every file of a path that has some: that is no backup of it."""
    what = "; ".join(f"{name}={path} (e.g. {example})" for name, path, example in emptied)
    return BackupError(
        f"{config.prefix}EXCLUDE={','.join(config.exclude)!r} leaves no file of {what}: "
        "the backup would hold empty directories; narrow the patterns or drop the path from PATHS"
    )


def held_files(previous: Mapping[str, Any], s: Survey) -> bool:
    """Whether the earlier archive ``previous`` (a manifest entry) held more than ``s`` finds now,
    which holds no regular file: any content, or more entries than the empty directories now."""
    return int(previous.get("source_bytes") or 0) > 0 or int(previous.get("file_count") or 0) > s.file_count


def check_not_empty(config: BackupConfig, s: Survey, earlier: Sequence[Entry] = ()) -> None:
    """Data with no regular file at all, after an archive that held files (``earlier``: this
    project's archives, complete or not: an incomplete one held files too; the newest that held
    files counts, so one ALLOW_EMPTY backup of nothing does not turn the guard off), is an
    unmounted or emptied volume, not a backup: refuse
    it (ALLOW_EMPTY=true allows it). Otherwise (a first backup of a new deployment) it goes ahead
    with a warning."""
    if s.regular_files or config.allow_empty:
        return
    where = ", ".join(f"{name}={path}" for name, path, _ in s.tops)
    held = [e for e in earlier if held_files(e, s)]
    if held:
        previous = max(held, key=created_of)
        raise BackupError(
            f"no file to back up: {where} hold no regular file, but the archive "
            f"{previous.get('filename')} held {previous.get('file_count')} files and directories: "
            "the data volume looks unmounted or emptied. "
            "Nothing was written and no archive was deleted; mount the volume (or restore the data), or "
            f"set {config.prefix}ALLOW_EMPTY=true if it really is empty now"
        )
    s.warnings.append(
        f"the data holds no regular file ({where}): an unmounted or emptied volume? Backed up, since "
        f"no earlier archive held files; once one has, such a backup fails unless "
        f"{config.prefix}ALLOW_EMPTY=true"
    )


def vanished_paths(config: BackupConfig, names: list[str]) -> list[str]:
    """The configured paths (as the header's ``resolved_paths`` records them, so that restore
    knows them) of the PATHS names in ``names``."""
    return [str(p.path) for p in config.paths if p.name in names]


def any_path_exists(config: BackupConfig) -> bool:
    return any(os.path.lexists(p.path) for p in config.paths)


def preflight(config: BackupConfig, source_bytes: int, ratio: float | None) -> None:
    """Refuse a backup that cannot fit, before writing anything. The estimate is the data's size
    times the last archive's compression ratio (1.0 when there is none), times SPACE_MARGIN."""
    r = ratio if ratio is not None else 1.0
    need = int(source_bytes * r * config.space_margin) + (1 << 20)
    free = free_bytes(config.backup_dir)
    if need > free:
        basis = (
            "the last archive's compression ratio" if ratio is not None else "no earlier archive: ratio 1.0"
        )
        raise BackupError(
            f"not enough space in {config.backup_dir}: this backup needs about {_mb(need)} "
            f"({_mb(source_bytes)} of data x {r:.2f} ({basis}) x {config.space_margin:g} margin + 1 MB), "
            f"but only {_mb(free)} is free; free some space (older archives are never deleted to make room)"
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def reserve_name(tier_dir: Path, config: BackupConfig, tier: str, created: datetime) -> tuple[str, int]:
    """Pick a filename that does not exist yet and create its ``.partial`` exclusively."""
    for seq in range(0, 1000):
        name = layout.make(config.project, tier, created, config.compression, seq).filename
        if (tier_dir / name).exists():
            continue
        try:
            fd = os.open(
                tier_dir / (name + layout.PARTIAL_SUFFIX), os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE
            )
        except FileExistsError:
            continue
        return name, fd
    raise BackupError(f"could not find a free archive name in {tier_dir}")


def _real_dir(p: Path) -> bool:
    """A directory, not a link to one (never opened: a FIFO there would block)."""
    try:
        return stat.S_ISDIR(os.lstat(p).st_mode)
    except OSError:
        return False


def fresh_tmp(tmp: Path) -> None:
    """Create the run's temp dir anew (one left by a dead run goes first: we hold the run lock);
    anything else in its way is named in the error, never the tier directory."""
    try:
        if _real_dir(tmp):
            shutil.rmtree(tmp)
        tmp.mkdir(mode=0o700)
    except OSError as e:
        raise BackupError(
            f"cannot create the run's temp dir {tmp}: {e.strerror or e}; remove what is in the way "
            f"there ({tmp.name} must be a directory of ours, or absent)"
        ) from None


class TreeWriter(Protocol):
    """How a chained archive (incremental.py) plugs into :func:`write_archive`: it sees the
    survey's walk, adds header and end-marker fields, writes the members itself, and keeps a file
    beside the archive (finished before the archive is renamed, removed if it is not)."""

    def visit(self, e: ScanEntry) -> None: ...

    def meta(self) -> dict[str, Any]: ...

    def write(
        self,
        final: Path,
        w: ArchiveWriter,
        found: Found,
        s: Survey,
        excluded: Callable[[str, bool], bool] | None,
        skip: frozenset[tuple[int, int]],
    ) -> None: ...

    def end(self) -> dict[str, Any]: ...

    def finish(self, filename: str, digest: str) -> None: ...

    def abort(self, final: Path) -> None: ...


def write_archive(
    config: BackupConfig,
    tier: str,
    created: datetime,
    should_stop: Callable[[], bool] = lambda: False,
    expected_ratio: float | None = None,
    earlier: Sequence[Entry] = (),
    chained: TreeWriter | None = None,
) -> WriteResult:
    """Write one archive into ``{backup_dir}/{tier}/`` and its ``.sha256`` sidecar. ``earlier``:
    the manifest entries of this project's archives (see :func:`check_not_empty`). ``chained``:
    how a chained archive (incremental.py) writes its trees instead of the plain walk.

    The archive is written as ``<name>.partial``, fsynced, and renamed only when complete.
    On any error or interruption the partial file is removed before the exception propagates.
    """
    t0 = time.monotonic()
    excluded = compile_excludes(config.exclude) if config.exclude else None
    visit = chained.visit if chained is not None else None
    s = survey(config.paths, should_stop, excluded, backup_dir=config.backup_dir, visit=visit)
    if not s.tops:
        raise no_data_error(config)
    if s.emptied:
        raise emptied_error(config, s.emptied)
    check_not_empty(config, s, earlier)
    preflight(config, s.source_bytes, expected_ratio)
    lay = config.layout
    tier_dir = lay.tier_dir(tier)
    tier_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    if os.path.islink(tier_dir):
        raise BackupError(
            f"{tier_dir} is a symlink: archives are written to (and pruned from) real directories only; "
            "mount the volume there instead"
        )
    skip = backup_dir_ids(config.backup_dir)
    filename, fd = reserve_name(tier_dir, config, tier, created)
    partial = tier_dir / (filename + layout.PARTIAL_SUFFIX)
    final = tier_dir / filename
    meta = build_meta(config, tier, created, s)
    if chained is not None:
        meta.update(chained.meta())
    sqlite_tmp = lay.tmp if config.sqlite_snapshot else None
    stream: IO[bytes] | None = None
    # the per-file hashes, until they are appended as the index member: an unnamed file (O_TMPFILE)
    # on the backup volume, gone with the process whatever happens; memory stays flat
    index = tempfile.TemporaryFile(dir=tier_dir, buffering=1 << 16)
    try:
        if sqlite_tmp is not None:
            fresh_tmp(sqlite_tmp)
        hw = HashingWriter(fd)
        stream = CODECS[config.compression].writer(hw, config.compression_level)  # type: ignore[arg-type]
        sink = _Sink(stream)
        tar = TarStream(sink)
        w = ArchiveWriter(tar, should_stop, sqlite_tmp, index)
        _json_member(tar, META_NAME, meta)
        found = Found()
        progress.begin("backup", s.source_bytes)
        try:
            if chained is not None:
                chained.write(final, w, found, s, excluded, skip)
            else:
                for e in walk(s.tops, found, should_stop, excluded, skip, s.ids):
                    added = w.count
                    w.add(e)
                    if e.arcname in s.kinds and w.count == added and e.path not in w.unreadable:
                        found.vanished.append(e.arcname)  # a file path that went before it was read
        finally:
            progress.end()
        warnings = s.warnings + found.warnings + w.warnings
        unreadable = s.unreadable + found.unreadable + w.unreadable + vanished_paths(config, found.vanished)
        if found.vanished:
            warnings.append(
                f"{', '.join(found.vanished)}: a configured path that vanished (or was replaced) while it "
                "was archived counts as unreadable: this archive is incomplete, and a restore of it "
                "(--allow-incomplete) leaves that path as it is"
            )
        if unreadable:
            warnings.append(f"{len(unreadable)} path(s) could not be read: " + ", ".join(unreadable[:20]))
        end = {
            "file_count": w.count,
            "source_bytes": w.bytes,
            "complete": not unreadable,
            "unreadable": unreadable,
            "warnings": warnings,
            "sqlite_snapshots": w.snapshotted,
            "excluded": found.excluded,
            "index": INDEX_NAME,
            "index_hash": INDEX_HASH,
            "index_entries": w.indexed,
        }
        if chained is not None:
            end.update(chained.end())
        _index_member(tar, index)
        _json_member(tar, END_NAME, end)
        tar.close()
        stream.close()
        stream = None
        os.fsync(fd)
        os.close(fd)
        fd = -1
        digest = hw.sha.hexdigest()
        if chained is not None:
            chained.finish(filename, digest)  # before the rename: an archive never lacks its snapshot
        layout.write_sidecar(final, digest)
        os.rename(partial, final)
        fsync_dir(tier_dir)
    except BaseException:
        if stream is not None:
            close_after_error(stream)  # its threads stop before the fd they write to is closed
        if fd >= 0:
            os.close(fd)
        remove_quietly(partial)
        if chained is not None:
            chained.abort(final)
        raise
    finally:
        index.close()
        if sqlite_tmp is not None and _real_dir(sqlite_tmp):
            shutil.rmtree(sqlite_tmp, ignore_errors=True)
    return WriteResult(
        path=final,
        filename=filename,
        size_bytes=hw.size,
        sha256=digest,
        file_count=w.count,
        source_bytes=w.bytes,
        duration_s=round(time.monotonic() - t0, 3),
        warnings=warnings,
        unreadable=unreadable,
        missing=s.missing,
        meta=meta,
        sqlite_snapshots=w.snapshotted,
        excluded=found.excluded,
        end=end,
    )
