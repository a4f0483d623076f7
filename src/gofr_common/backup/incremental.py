"""Chained archives (MODE=incremental): a full, then incrementals that GNU tar alone restores
(``tar --listed-incremental=/dev/null -xf FULL; ... -xf INCn`` gives day n's exact tree).

run.py calls it in incremental mode; it is writer.write_archive with the :class:`Chained`
strategy, so full-mode archives stay byte-for-byte as they were. :func:`write_chained` writes, with ``base=None``, a chain head (``kind: "full"``: every
entry stored) and, with a base :class:`Snapshot`, an incremental (``kind: "incremental"``):

* every directory gets a member carrying a GNU.dumpdir listing (dumpdir.py): ``D`` subdirectory,
  ``Y`` stored here, ``N`` unchanged (GNU tar keeps the copy an earlier archive extracted, and
  purges every entry the listing does not name: deletions, renames, type changes);
* a regular file or symlink is stored when it is new or its record differs from the base's at its
  path (type, dev, inode, size, mtime_ns, ctime_ns, mode, uid, gid; ctime catches a content change
  with the mtime put back, and a chmod/chown); SQLite databases go through sqlite_snapshot as in a
  full, and count as changed when their ``-wal``/``-journal`` did (commits land there first);
* hard links: a changed inode changes the ctime every path of it shares, so its whole group is
  stored, the first path as a file and the others as links to it in this archive (a link member
  never points at a file of another archive).

The snapshot (the tree as of an archive) is a file beside it, ``<archive>.snap``, written in the
same pass; see :class:`SnapshotWriter` and :func:`load_snapshot` for the format and what makes it
trusted. Anything wrong with it raises :class:`SnapshotError`: the caller then writes a full.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import struct
import sys
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from . import dumpdir, layout, sqlite_snapshot
from .config import BackupConfig
from .errors import BackupError, Interrupted
from .fsutil import remove_quietly
from .manifest import Entry
from .scan import Found, ScanEntry, Survey, _kind, _replaced, _still
from .writer import ArchiveWriter, WriteResult, write_archive

KIND_FULL = "full"
KIND_INCREMENTAL = "incremental"
SNAP_SUFFIX = ".snap"
SNAP_MAGIC = b"GOFR-SNAPSHOT 1\n"
SNAP_FORMAT = 1
# type, dev, inode, size, mtime_ns, ctime_ns, st_mode, uid, gid; a symlink's target follows
_REC = struct.Struct("<cQQqqqIII")
_LEN = struct.Struct("<II")
_END = 0xFFFFFFFF
_MAX_FIELD = 1 << 16
FILE, DB, DIR, LINK = b"f", b"q", b"d", b"l"  # DB: a regular file archived as a SQLite snapshot
_KINDS = frozenset(k[0] for k in (FILE, DB, DIR, LINK))
_U32 = struct.Struct("<I")
_CHUNK = 1 << 20  # SnapshotWriter hands records on a MiB at a time
_FSENC, _FSERR = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()  # os.fsencode's


class SnapshotError(BackupError):
    """The snapshot beside an archive is missing, damaged, or not that archive's: write a full."""


def record(st: os.stat_result, target: bytes = b"", db: bool = False) -> bytes:
    """The packed record of one entry (what the next run compares)."""
    mode = st.st_mode
    kind = DIR if stat.S_ISDIR(mode) else LINK if stat.S_ISLNK(mode) else DB if db else FILE
    return (
        _REC.pack(
            kind, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, mode, st.st_uid, st.st_gid
        )
        + target
    )


def same(now: bytes, before: bytes | None) -> bool:
    """Whether an entry is unchanged: equal records, a database's and a plain file's alike."""
    if before is None:
        return False
    if now[1:] != before[1:]:
        return False
    return now[:1] == before[:1] or {now[:1], before[:1]} == {FILE, DB}


_CTIME = slice(33, 41)  # the ctime field of a record


def same_but_ctime(now: bytes, before: bytes | None) -> bool:
    """For a database's -wal/-journal: SQLite, opening a database as root, fchowns its -wal to the
    database's owner, which moves the -wal's ctime on every read (our own snapshot included); its
    commits always move its mtime or size."""
    if before is None or len(now) != len(before):
        return False
    return now[: _CTIME.start] == before[: _CTIME.start] and now[_CTIME.stop :] == before[_CTIME.stop :]


def snapshot_path(archive: Path) -> Path:
    return archive.with_name(archive.name + SNAP_SUFFIX)


@dataclass
class Snapshot:
    """The tree as of one archive, read back and checked. ``entries``: arcname -> record, in
    memory (like GNU tar's snapshot): about 250 bytes per entry with 40-character names."""

    archive: str
    archive_sha256: str
    kind: str
    full: dict[str, str]  # the chain's full: {"filename", "sha256"}
    tops: dict[str, str]  # PATHS name -> the resolved path its records were taken under
    entries: dict[str, bytes] = field(default_factory=dict)

    def link(self) -> dict[str, str]:
        return {"filename": self.archive, "sha256": self.archive_sha256}


class SnapshotWriter:
    """Streams records into ``<archive>.snap.partial`` (gzip), as the archive is written.

    Layout (uncompressed): the magic line; records ``<u32 name length><u32 record length><name
    bytes><record>``; a u32 0xFFFFFFFF; ``<u32 length><trailer JSON>``; then the SHA-256 (32 raw
    bytes) of everything before it. The trailer names the archive and its SHA-256 (known only once
    the archive is written), the chain's full, the resolved PATHS, the entry count, and
    ``records_sha256`` (the digest the archive's own end marker also records)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + layout.PARTIAL_SUFFIX)
        self.f: IO[bytes] = gzip.open(self.partial, "wb", compresslevel=3)  # type: ignore[assignment]
        self.sha = hashlib.sha256()
        self._records = hashlib.sha256()
        self.count = 0
        # records gathered here and handed to both digests and the gzip stream a chunk at a time
        # (one hash update and one gzip write per record cost more than packing the record)
        self._buf: list[bytes] = []
        self._buffered = 0
        self._put(SNAP_MAGIC)

    def _put(self, b: bytes) -> None:
        self.sha.update(b)
        self.f.write(b)

    def _flush(self) -> None:
        if self._buf:
            b = b"".join(self._buf)
            self._buf.clear()
            self._buffered = 0
            self._records.update(b)
            self._put(b)

    @property
    def records(self) -> Any:
        """The SHA-256 of every record so far (a hashlib object)."""
        self._flush()
        return self._records

    def add(self, arcname: str, rec: bytes) -> None:
        raw = arcname.encode(_FSENC, _FSERR)
        b = _LEN.pack(len(raw), len(rec)) + raw + rec
        self._buf.append(b)
        self.count += 1
        self._buffered += len(b)
        if self._buffered >= _CHUNK:
            self._flush()

    def finish(self, trailer: dict[str, Any]) -> None:
        self._flush()
        self._put(struct.pack("<I", _END))
        data = json.dumps(trailer, sort_keys=True).encode()
        self._put(struct.pack("<I", len(data)) + data)
        self.f.write(self.sha.digest())
        self.f.close()
        fd = os.open(self.partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(self.partial, self.path)

    def abort(self) -> None:
        try:
            self.f.close()
        except OSError:
            pass
        remove_quietly(self.partial)


def load_snapshot(archive: Path, sha256: str) -> Snapshot:
    """The snapshot beside ``archive``, whose SHA-256 the caller knows from a record it trusts
    (the manifest): the snapshot must be whole (its own digest), and name exactly this archive and
    checksum. Raises SnapshotError otherwise; never returns a partial or foreign snapshot."""
    path = snapshot_path(archive)
    try:
        with gzip.open(path, "rb") as f:
            return _read_snapshot(f, archive.name, sha256)  # type: ignore[arg-type]
    except FileNotFoundError:
        raise SnapshotError(f"{path.name} is missing: the next archive must be a full") from None
    except (OSError, EOFError, ValueError, struct.error, UnicodeDecodeError, KeyError, TypeError) as e:
        raise SnapshotError(f"{path.name} is damaged ({e}): the next archive must be a full") from None


def _read_snapshot(f: IO[bytes], filename: str, sha256: str) -> Snapshot:
    # read whole (a few MB for 100k entries; the entries dict holds as much anyway), parsed in memory
    data = f.read()
    size = len(data)
    pos = len(SNAP_MAGIC)
    if data[:pos] != SNAP_MAGIC:
        raise ValueError("truncated" if size < pos else "not a gofr snapshot")
    entries: dict[str, bytes] = {}
    unpack = _LEN.unpack_from
    kinds = _KINDS
    lo, hi = _REC.size, _MAX_FIELD
    while True:
        if pos + 4 > size:
            raise ValueError("truncated")
        if _U32.unpack_from(data, pos)[0] == _END:
            break
        if pos + 8 > size:
            raise ValueError("truncated")
        n, m = unpack(data, pos)
        if not 0 < n <= hi or not lo <= m <= hi:
            raise ValueError("bad record length")
        a = pos + 8
        b = a + n
        pos = b + m
        if pos > size:
            raise ValueError("truncated")
        raw, rec = data[a:b], data[b:pos]
        name = raw.decode(_FSENC, _FSERR)
        if name in entries or rec[0] not in kinds:
            raise ValueError(f"bad record {raw[:100]!r}")
        entries[name] = rec
    records = hashlib.sha256(data[len(SNAP_MAGIC) : pos])
    pos += 4

    def take(n: int) -> bytes:
        nonlocal pos
        b = data[pos : pos + n]
        if len(b) != n:
            raise ValueError("truncated")
        pos += n
        return b

    (n,) = struct.unpack("<I", take(4))
    if n > _MAX_FIELD:
        raise ValueError("bad trailer length")
    trailer = json.loads(take(n))
    digest = data[pos : pos + 33]
    if digest != hashlib.sha256(data[:pos]).digest():
        raise ValueError("checksum mismatch")
    if not isinstance(trailer, dict) or trailer.get("format") != SNAP_FORMAT:
        raise ValueError("unknown snapshot format")
    if trailer.get("archive") != filename or trailer.get("archive_sha256") != sha256:
        raise ValueError(
            f"it belongs to {trailer.get('archive')!r} sha256 {str(trailer.get('archive_sha256'))[:16]}, "
            f"not {filename!r} sha256 {sha256[:16]}"
        )
    if trailer.get("records_sha256") != records.hexdigest() or trailer.get("entries") != len(entries):
        raise ValueError("records do not match the trailer")
    full, tops = trailer["full"], trailer["tops"]
    if not (isinstance(full, dict) and all(isinstance(full.get(k), str) for k in ("filename", "sha256"))):
        raise ValueError("bad chain record")
    if not (isinstance(tops, dict) and all(isinstance(v, str) for v in tops.values())):
        raise ValueError("bad tops record")
    kind = trailer.get("kind")
    if kind not in (KIND_FULL, KIND_INCREMENTAL):
        raise ValueError("bad kind")
    return Snapshot(
        filename, sha256, kind, {"filename": full["filename"], "sha256": full["sha256"]}, tops, entries
    )


def base_or_full(archive: Path | None, sha256: str | None) -> tuple[Snapshot | None, str | None]:
    """The base for the next archive, or (None, why a full is written instead)."""
    if archive is None or not sha256:
        return None, "no earlier archive"
    try:
        return load_snapshot(archive, sha256), None
    except SnapshotError as e:
        return None, str(e)


# -- the walk ---------------------------------------------------------------------------------
_NO_BASE: dict[str, bytes] = {}


def _inode(e: ScanEntry) -> tuple[int, int, str]:
    return e.st.st_dev, e.st.st_ino, e.arcname.split("/", 1)[0]


def _base_for_top(base: Snapshot | None, name: str, path: str) -> Mapping[str, bytes]:
    """The base's records for a configured path, if they were taken under the same resolved path."""
    return base.entries if base is not None and base.tops.get(name) == path else _NO_BASE


class _LinkGroups:
    """Hard-link groups, found during the survey's walk: (dev, inode, top) -> whether any path of
    it is new or changed since the base. Memory: one item per inode with more than one link."""

    def __init__(self, base: Snapshot | None) -> None:
        self.base = base
        self.old: Mapping[str, bytes] = _NO_BASE
        self.changed: dict[tuple[int, int, str], bool] = {}

    def visit(self, e: ScanEntry) -> None:
        if "/" not in e.arcname:  # a configured path: its records follow
            self.old = _base_for_top(self.base, e.arcname, e.path)
        st = e.st
        if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            key = _inode(e)
            if not same(record(st), self.old.get(e.arcname)):
                self.changed[key] = True
            else:
                self.changed.setdefault(key, False)


class ChainWriter:
    """Writes the trees of one chained archive: :func:`write_chained`."""

    def __init__(
        self,
        w: ArchiveWriter,
        snap: SnapshotWriter,
        links: _LinkGroups,
        found: Found,
        should_stop: Callable[[], bool],
        excluded: Callable[[str, bool], bool] | None,
        skip_ids: frozenset[tuple[int, int]],
        ids: Mapping[str, tuple[int, int]],
    ) -> None:
        self.ids = ids  # each configured path's (dev, ino) when the survey found it
        self.w = w
        self.snap = snap
        self.links = links
        self.found = found
        self.should_stop = should_stop
        self.excluded = excluded
        self.skip_ids = skip_ids
        self.dbs = w.sqlite_tmp is not None
        self.unchanged = 0

    def top(self, name: str, path: str, kind: str, old: Mapping[str, bytes]) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.found.warnings.append(
                f"path {name}={path} vanished while archiving (moved away or unmounted?)"
            )
            self.found.vanished.append(name)
            return
        except PermissionError:
            self.found.unreadable.append(path)
            return
        if _kind(st.st_mode) != kind or (name in self.ids and _replaced(kind, self.ids[name], st)):
            self.found.warnings.append(f"path {name}={path} was replaced (or is no longer a {kind}); skipped")
            self.found.vanished.append(name)
            return
        e = ScanEntry(name, path, st)
        if kind == "dir":
            self._tree(e, old)
            if not _still(path, st):
                self.found.warnings.append(
                    f"path {name}={path} vanished or was replaced while it was archived (moved away or "
                    "unmounted?): the archive holds only part of it"
                )
                self.found.vanished.append(name)
            return
        rec = record(st)
        # a database as a configured path of its own: its -wal/-journal is no entry of any
        # listing, yet its commits land there first (the file itself may keep size, mtime and
        # ctime), so they are recorded (under names no entry can have) and a change of them
        # counts as a change of the database, as in a directory
        siblings = self._top_db_siblings(e, rec, old) if self.dbs else []
        db_changed = any(not same_but_ctime(r, old.get(k)) for k, r in siblings if r is not None) or any(
            (r is None) != (old.get(k) is None) for k, r in siblings
        )
        if self._same(e, rec, old) and not db_changed:
            self.snap.add(name, old[name])
            self.unchanged += 1
        else:
            self._store(e, rec)
        for k, r in siblings:
            if r is not None:
                self.snap.add(k, r)

    def _top_db_siblings(
        self, e: ScanEntry, rec: bytes, old: Mapping[str, bytes]
    ) -> list[tuple[str, bytes | None]]:
        """For a configured path that is a SQLite database: its -wal and -journal, each as
        (snapshot key, record now or None when absent); [] for any other file."""
        if not self._is_db(e, rec, old):
            return []
        out: list[tuple[str, bytes | None]] = []
        for suffix in ("-wal", "-journal"):
            try:
                sst = os.lstat(e.path + suffix)
            except OSError:
                out.append((f"{e.arcname}/{suffix}", None))
                continue
            out.append((f"{e.arcname}/{suffix}", record(sst) if stat.S_ISREG(sst.st_mode) else None))
        return out

    def _same(self, e: ScanEntry, rec: bytes, old: Mapping[str, bytes]) -> bool:
        """Unchanged since the base: its record, and for a hard-linked file every path of its
        inode (a changed link group is stored whole, its first path a file, the others links)."""
        if not same(rec, old.get(e.arcname)):
            return False
        return e.st.st_nlink < 2 or not self.links.changed.get(_inode(e), True)

    def _store(self, e: ScanEntry, rec: bytes) -> None:
        before = self.w.count
        self.w.add(e)
        if (
            self.w.count == before
        ):  # not stored (vanished, unreadable): not recorded, so the next run stores it
            if e.arcname == e.arcname.split("/", 1)[0] and e.path not in self.w.unreadable:
                self.found.vanished.append(e.arcname)  # a file path that went before it was read
            return
        if e.path in self.w.snapshotted_set:
            rec = DB + rec[1:]
        self.snap.add(e.arcname, rec)

    def _list(self, d: ScanEntry, cut: int) -> list[tuple[ScanEntry, bytes]] | None:
        try:
            with os.scandir(d.path) as it:
                items = sorted(it, key=lambda x: x.name)
        except PermissionError:
            self.found.unreadable.append(d.path + "/")
            return None
        except FileNotFoundError:
            self.found.warnings.append(f"{d.path} vanished while scanning; skipped")
            return None
        out = []
        for x in items:
            try:
                st = x.stat(follow_symlinks=False)
                target = os.fsencode(os.readlink(x.path)) if stat.S_ISLNK(st.st_mode) else b""
            except FileNotFoundError:
                self.found.warnings.append(f"{x.path} vanished while scanning; skipped")
                continue
            arc = f"{d.arcname}/{x.name}"
            kind = _kind(st.st_mode)
            if kind == "dir" and (st.st_dev, st.st_ino) in self.skip_ids:
                self.found.left_out.setdefault(d.arcname[: cut - 1], []).append(arc[cut:])
                self.found.warnings.append(
                    f"the backup directory is inside path {arc.split('/', 1)[0]} (at {arc}): it is left "
                    "out of the archive, so archives never hold earlier archives; better keep it outside the data"
                )
                continue
            if self.excluded is not None and self.excluded(arc[cut:], kind == "dir"):
                self.found.excluded += 1
                continue
            if kind is None:
                self.found.warnings.append(f"{x.path} is a socket, FIFO or device; skipped")
                continue
            out.append((ScanEntry(arc, x.path, st), record(st, target)))
        return out

    def _is_db(self, e: ScanEntry, rec: bytes, old: Mapping[str, bytes]) -> bool:
        before = old.get(e.arcname)
        if same(rec, before):
            return before is not None and before[:1] == DB
        if e.st.st_size < 512:
            return False
        try:
            with open(e.path, "rb") as f:
                return sqlite_snapshot.is_sqlite(f.read(16))
        except OSError:
            return False

    def _tree(self, top: ScanEntry, old: Mapping[str, bytes]) -> None:
        cut = len(top.arcname) + 1
        stack: list[tuple[ScanEntry, bytes]] = [(top, record(top.st))]
        while stack:
            if self.should_stop():
                raise Interrupted("interrupted while archiving")
            d, drec = stack.pop()
            items = self._list(d, cut)
            if items is None:
                continue  # unreadable or gone: no member, so GNU tar keeps what it had
            listing: list[tuple[str, str]] = []
            store: list[tuple[ScanEntry, bytes]] = []
            keep: list[tuple[str, bytes]] = []
            subdirs: list[tuple[ScanEntry, bytes]] = []
            files = {e.arcname: (e, rec) for e, rec in items if stat.S_ISREG(e.st.st_mode)}
            # SQLite databases with a -wal/-journal/-shm beside them: those siblings are neither
            # listed nor stored (the snapshot holds their commits; a stale -wal must be purged),
            # and a change of the -wal or -journal counts as a change of the database
            siblings: dict[str, str] = {}  # sibling arcname -> its database's
            if self.dbs:
                for arc in files:
                    dbarc = sqlite_snapshot.sibling_base(arc)
                    if dbarc is not None and dbarc in files and self._is_db(*files[dbarc], old):
                        siblings[arc] = dbarc
            changed_dbs = {
                db
                for arc, db in siblings.items()
                if not arc.endswith("-shm") and not same_but_ctime(files[arc][1], old.get(arc))
            }
            for e, rec in items:
                name = e.arcname[len(d.arcname) + 1 :]
                if stat.S_ISDIR(e.st.st_mode):
                    listing.append((dumpdir.DIRECTORY, name))
                    subdirs.append((e, rec))
                elif e.arcname in siblings:
                    keep.append((e.arcname, rec))
                elif self._same(e, rec, old) and e.arcname not in changed_dbs:
                    listing.append((dumpdir.UNCHANGED, name))
                    keep.append((e.arcname, old[e.arcname]))
                else:
                    listing.append((dumpdir.STORED, name))
                    store.append((e, rec))
            ti = self.w._info(d.arcname, d.st)
            ti.type = tarfile.DIRTYPE
            self.w.tar.add_dir(ti, dumpdir.encode(listing))
            self.w.count += 1
            self.snap.add(d.arcname, drec)
            for arc, rec in keep:
                self.snap.add(arc, rec)
            self.unchanged += len(keep)
            for e, rec in store:
                self._store(e, rec)
            stack.extend(reversed(subdirs))


class Chained:
    """A chained archive's part in writer.write_archive (its TreeWriter): a chain head when
    ``base`` is None, else an incremental over the archive ``base`` was loaded for."""

    def __init__(self, base: Snapshot | None, should_stop: Callable[[], bool]) -> None:
        self.base = base
        self.kind = KIND_FULL if base is None else KIND_INCREMENTAL
        self.links = _LinkGroups(base)
        self.visit = self.links.visit
        self.should_stop = should_stop
        self.snap: SnapshotWriter | None = None
        self.cw: ChainWriter | None = None
        self.tops: dict[str, str] = {}

    def meta(self) -> dict[str, Any]:
        base = self.base
        return {
            "kind": self.kind,
            "chain": None if base is None else {"full": base.full, "parent": base.link()},
        }

    def write(
        self,
        final: Path,
        w: ArchiveWriter,
        found: Found,
        s: Survey,
        excluded: Callable[[str, bool], bool] | None,
        skip: frozenset[tuple[int, int]],
    ) -> None:
        self.snap = SnapshotWriter(snapshot_path(final))
        self.cw = ChainWriter(w, self.snap, self.links, found, self.should_stop, excluded, skip, s.ids)
        self.tops = {name: path for name, path, _ in s.tops}
        for name, path, top_kind in s.tops:
            self.cw.top(name, path, top_kind, _base_for_top(self.base, name, path))

    def end(self) -> dict[str, Any]:
        assert self.snap is not None and self.cw is not None
        return {
            "kind": self.kind,
            "unchanged": self.cw.unchanged,
            "snapshot": {
                "filename": self.snap.path.name,
                "records_sha256": self.snap.records.hexdigest(),
                "entries": self.snap.count,
            },
        }

    def finish(self, filename: str, digest: str) -> None:
        assert self.snap is not None
        base = self.base
        self.snap.finish(
            {
                "format": SNAP_FORMAT,
                "archive": filename,
                "archive_sha256": digest,
                "kind": self.kind,
                "full": {"filename": filename, "sha256": digest} if base is None else base.full,
                "tops": self.tops,
                "entries": self.snap.count,
                "records_sha256": self.snap.records.hexdigest(),
            }
        )

    def abort(self, final: Path) -> None:
        if self.snap is not None:
            self.snap.abort()
        if not final.exists():
            remove_quietly(snapshot_path(final))


def write_chained(
    config: BackupConfig,
    tier: str,
    created: datetime,
    base: Snapshot | None,
    should_stop: Callable[[], bool] = lambda: False,
    expected_ratio: float | None = None,
    earlier: Sequence[Entry] = (),
) -> WriteResult:
    """Write one chained archive into ``{backup_dir}/{tier}/``, with its ``.sha256`` and its
    ``.snap``: a full when ``base`` is None, else an incremental over the archive ``base`` was
    loaded for (:func:`load_snapshot`). Same guarantees as writer.write_archive, which writes it."""
    return write_archive(
        config, tier, created, should_stop, expected_ratio, earlier, chained=Chained(base, should_stop)
    )
