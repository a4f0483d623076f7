"""Integrity verification.

One pass over the file: every byte is hashed on its way into the decompressor, the whole tar stream
is read to its end (every member's content, so a truncated or bit-flipped stream fails, not just a
listing of the first members), and the member count is checked against the archive's own record.

Two kinds of "not ok", never confused: *checked and bad* (checksum mismatch, a corrupt or truncated
stream: ``checked`` is True) and *could not check* (the file could not be read -- EIO, out of
memory -- so nothing is known about it: ``checked`` is False). Only the first may mark an archive
failed; retention deletes nothing for the second.

Every regular member's content is also hashed (BLAKE3) as it is read, and compared, in archive
order, with the archive's per-file index (written after the data): an archive whose content was
altered after it was written, and then re-signed (its .sha256 and the manifest's checksum
recomputed to match), fails here, in ``verify`` and in the restore's own pass, not only in a drill.

A caller that needs what the pass saw (the restore drill, the source spot check) sets a
:class:`Capture` with :func:`capturing`: every pass made under it, including one made by the restore
engine on its behalf, copies the per-file hash index out and records its result.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import lzma
import os
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zstandard
from blake3 import blake3
from zlib_ng import zlib_ng

from . import progress
from .archive_format import (
    END_NAME,
    INDEX_NAME,
    META_NAME,
    header_problem,
    member_limits_error,
    open_tar_stream,
    read_index,
)
from .codecs import CHUNK
from .errors import Interrupted, LocalFault
from .layout import read_sidecar, sidecar_path

ZLIB_NG_ERROR: type[BaseException] = zlib_ng.error  # type: ignore[assignment]  # stub says instance
STREAM_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    OSError,  # gzip's BadGzipFile and bz2's "Invalid data stream"; a failed read of the file itself
    # is told apart by HashingReader.io_error (could not check)
    EOFError,
    ValueError,  # includes json errors in the metadata members
    UnicodeError,
    zlib.error,
    ZLIB_NG_ERROR,
    lzma.LZMAError,
    zstandard.ZstdError,
    LookupError,
    MemoryError,  # could not check, not a damaged stream
)


class StopVerify(Exception):
    """Raised by a ``visit`` callback to end the pass; the archive then fails with this reason."""


class HashingReader(io.RawIOBase):
    def __init__(self, f: Any, should_stop: Callable[[], bool] = lambda: False) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0
        self.should_stop = should_stop
        self.io_error: OSError | None = None  # the file itself could not be read (EIO, ...)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.should_stop():
            raise Interrupted("interrupted while reading archive")
        try:
            if hasattr(self.f, "readinto"):
                n = self.f.readinto(b)
            else:  # e.g. an S3 streaming body
                data = self.f.read(len(b))
                n = len(data)
                b[:n] = data
        except OSError as e:
            self.io_error = e
            raise
        if n:
            self.sha.update(memoryview(b)[:n])
            self.size += n
            progress.advance(n)
        return n or 0

    def drain(self) -> None:
        """Hash whatever the decompressor did not read (e.g. garbage after the stream)."""
        buf = bytearray(CHUNK)
        while self.readinto(buf):
            pass


class _ContentHashes:
    """The BLAKE3 of every regular member's content, in archive order, kept in a temp file (memory
    does not grow with the file count) until the index arrives; then the two are compared.

    The temp files are ours, not the archive's: when they cannot be written (no writable temp dir,
    a full /tmp), the comparison is skipped and ``lost`` says why; it never fails the archive."""

    def __init__(self) -> None:
        self.f: IO[bytes] | None = None  # our record: one JSON line [name, digest] per member
        self.index: IO[bytes] | None = None  # a copy of the archive's index member
        self.lost: str | None = None
        try:
            self.f = tempfile.TemporaryFile(buffering=1 << 16)  # noqa: SIM115
            self.index = tempfile.TemporaryFile(buffering=1 << 16)  # noqa: SIM115
        except OSError as e:
            self._lose(e)
        self.hash: Any = None  # of the member being read
        self.got = 0
        self.entries = 0
        self.link_targets: set[str] = set()  # what hard links point at (memory: one per link)

    def _lose(self, e: OSError) -> None:
        self.close()
        self.f = self.index = None
        self.lost = (
            f"the per-file hashes were not checked: no room for them in the temp dir ({e.strerror or e})"
        )

    def spool_index(self) -> Any:
        """Something ``read_member`` hashes into: it copies the index member into ``self.index``."""
        content = self

        class _Spool:
            def update(self, b: bytes) -> None:
                if content.index is not None:
                    try:
                        content.index.write(b)
                    except OSError as e:
                        content._lose(e)

        return _Spool()

    def start(self, m: tarfile.TarInfo) -> None:
        self.hash = blake3() if m.isreg() else None
        self.got = 0

    def update(self, b: bytes) -> None:
        if self.hash is not None:
            self.hash.update(b)
            self.got += len(b)

    def finish(self, m: tarfile.TarInfo) -> None:
        """Record the member just read: its digest if it is a regular file read whole; for a hard
        link, the name it points at (the index repeats the target's digest: compared with the
        index's line for that target, itself checked against the target's content)."""
        if self.f is None or not (m.isreg() or m.islnk()):
            return
        whole = m.isreg() and self.hash is not None and self.got == m.size
        digest = self.hash.hexdigest() if whole else None
        link = m.linkname.rstrip("/") if m.islnk() else None
        if link is not None:
            self.link_targets.add(link)
        self.hash = None
        try:
            self.f.write(json.dumps([m.name, digest, link]).encode() + b"\n")
        except OSError as e:
            self._lose(e)
            return
        self.entries += 1

    def compare(self, index: IO[bytes]) -> str | None:
        """None when the index lists exactly these members, in this order, with these digests;
        else what is wrong (the first few differences)."""
        differ: list[str] = []
        n_differ = listed = 0
        targets: dict[str, str] = {}  # hard link target -> its (checked) digest
        try:
            assert self.f is not None
            self.f.flush()
            self.f.seek(0)
            for name, digest in read_index(index):
                line = self.f.readline()
                if not line:
                    return f"the archive's index lists {name!r}, which is not among its members"
                ours, got, link = json.loads(line)
                listed += 1
                if ours != name:
                    return f"the archive's index lists {name!r} where the archive holds {ours!r}"
                if link is not None:  # a hard link holds what its target holds
                    got = targets.get(link, "")
                elif name in self.link_targets and got is not None:
                    targets[name] = got
                if got is not None and got != digest:
                    n_differ += 1
                    if len(differ) < 5:
                        differ.append(name)
        except ValueError as e:
            return f"the archive's index is damaged: {e}"
        except OSError as e:  # reading our own temp file back
            self._lose(e)
            return None
        if listed != self.entries:
            return f"the archive's index lists {listed} files, the archive holds {self.entries}"
        if n_differ:
            more = f" and {n_differ - len(differ)} more" if n_differ > len(differ) else ""
            return (
                f"{n_differ} member(s) differ from the archive's own record of their content (BLAKE3): "
                f"{', '.join(differ)}{more}; the archive was altered after it was written"
            )
        return None

    def close(self) -> None:
        for f in (self.f, self.index):
            if f is not None:
                with contextlib.suppress(OSError):  # flushing what is left to a full temp dir
                    f.close()


_CONTENT: contextvars.ContextVar[_ContentHashes | None] = contextvars.ContextVar("gofr_content", default=None)


def read_member(tar: tarfile.TarFile, m: tarfile.TarInfo, fd: int | None = None, hasher: Any = None) -> None:
    """Read a member's data to its end (writing it to ``fd`` if given, hashing it into ``hasher``
    if given, and into the verification pass's BLAKE3 of it), and stop at once if it is short:
    tarfile would otherwise "skip" the missing bytes 10 KB at a time, which for a hostile claim of
    1 TiB takes minutes. Raises ValueError (a damaged stream), LocalFault (``fd`` cannot be written)."""
    src = tar.extractfile(m)
    assert src is not None
    content = _CONTENT.get()
    got = 0
    while b := src.read(CHUNK):
        got += len(b)
        if hasher is not None:
            hasher.update(b)
        if content is not None:
            content.update(b)
        if fd is not None:
            view = memoryview(b)
            try:
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as e:  # where it is written (ENOSPC, EDQUOT, EIO, ...): not the archive's fault
                raise LocalFault(f"cannot write {m.name!r}: {e.strerror or e}", e) from None
    if got != m.size:
        raise ValueError(f"member {m.name!r} is truncated: it claims {m.size} bytes, {got} are there")


@dataclass
class Member:
    name: str
    type: bytes
    size: int
    linkname: str


@dataclass
class VerifyResult:
    path: Path
    ok: bool
    error: str | None = None
    # False: the archive could not be read to the end (I/O error, out of memory, interrupted), so
    # nothing is known about it: never a reason to mark it failed or to delete it
    checked: bool = True
    sha256: str | None = None
    file_count: int = 0
    # the archive itself is sound (its stream reads to the end and it matches the manifest's
    # checksum, or there is none) even if ok is False because its .sha256 file is damaged:
    # retention never deletes such an archive
    archive_intact: bool = False
    note: str | None = None  # e.g. the .sha256 file is missing and the manifest's checksum was used
    # True: only the checksum was checked (a sealed archive without an identity): its contents,
    # member count and completeness were not read
    checksum_only: bool = False
    meta: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    members: list[Member] = field(default_factory=list)


@dataclass
class Capture:
    """What the verification passes made under :func:`capturing` saw. ``index``: a file the index
    member is copied into (from its start, each pass); ``member``: called with every data member."""

    index: IO[bytes] | None = None
    member: Callable[[tarfile.TarInfo], None] | None = None
    result: VerifyResult | None = None  # of the last pass
    has_index: bool = False
    # called with each pass's result as it ends, while ``index`` still holds that pass's index (the
    # next pass truncates it): a chain's drill reads every archive's index, not only the last one's
    done: Callable[[VerifyResult], None] | None = None
    # called when the passes start again from the first archive (a chain's restore that rewinds,
    # extract.Rewind): what the earlier passes saw is forgotten
    restart: Callable[[], None] | None = None


_CAPTURE: contextvars.ContextVar[Capture | None] = contextvars.ContextVar("gofr_verify_capture", default=None)


@contextlib.contextmanager
def capturing(cap: Capture) -> Iterator[Capture]:
    token = _CAPTURE.set(cap)
    try:
        yield cap
    finally:
        _CAPTURE.reset(token)


def restart_capture() -> None:
    """The verification passes start again from the first archive (see ``Capture.restart``)."""
    cap = _CAPTURE.get()
    if cap is not None and cap.restart is not None:
        cap.restart()


def _copy_index(tar: tarfile.TarFile, m: tarfile.TarInfo, into: IO[bytes] | None) -> None:
    fd = None
    if into is not None:
        into.flush()
        into.seek(0)
        into.truncate()
        fd = into.fileno()
    read_member(tar, m, fd)


def verify_archive(
    path: Path,
    expected_sha256: str | None = None,
    collect_members: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    visit: Callable[[tarfile.TarFile, tarfile.TarInfo], None] | None = None,
    stream: Any = None,
    sidecar: bool = True,
) -> VerifyResult:
    """Check ``path`` against its ``.sha256`` sidecar, ``expected_sha256`` (the manifest's), and
    its own contents. ``visit`` is called for every data member while the stream is read, which is
    how restore extracts in the same pass that verifies."""
    res = VerifyResult(path=path, ok=False)
    try:
        if stream is None and not path.is_file():
            res.error = f"archive not found: {path}"
            return res
        side = read_sidecar(path) if sidecar else None
        total = path.stat().st_size if stream is None else 0
        f = stream if stream is not None else open(path, "rb", buffering=CHUNK)  # noqa: SIM115
    except OSError as e:
        return could_not_check(res, e)
    side_error = None
    if not sidecar:
        pass  # the caller checks the checksum another way (a remote manifest, a decrypted temp file)
    elif side is None and expected_sha256:  # the manifest still holds the checksum: use it, and say so
        res.note = f"{sidecar_path(path).name} is missing: checked against the manifest's checksum"
    elif side is None:
        side_error = f"checksum file missing: {sidecar_path(path).name}"
    elif side == "":
        side_error = f"checksum file malformed: {sidecar_path(path).name} (expected '<sha256>  {path.name}')"

    stream_error: str | None = None
    unreadable: BaseException | None = None
    count = 0
    cap = _CAPTURE.get()
    if cap is not None:
        cap.has_index = False
    progress.begin("restore" if visit is not None else "verify", total)
    content = _ContentHashes()
    index_file: IO[bytes] | None = None
    index_error: str | None = None
    token = _CONTENT.set(content)
    with contextlib.ExitStack() as stack, contextlib.nullcontext(f) if stream is not None else f:
        stack.callback(_CONTENT.reset, token)
        stack.callback(content.close)
        hr = HashingReader(f, should_stop)
        try:
            with open_tar_stream(path, raw=hr, read_ahead=True) as tar:  # type: ignore[arg-type]
                first = True
                last_name = None
                index_seen = False
                for m in tar:
                    if first:
                        if m.name != META_NAME:
                            raise ValueError(f"first member is {m.name!r}, not {META_NAME}")
                        res.meta = _read_json(tar, m)
                        bad = header_problem(res.meta)
                        if bad:  # a restore would join such a name onto its target: a bad archive
                            raise StopVerify(bad)
                        first = False
                        continue
                    if res.end is not None:
                        raise ValueError(f"member {m.name!r} after the end marker")
                    if m.name == END_NAME:
                        res.end = _read_json(tar, m)
                        continue
                    tar.members.clear()  # type: ignore[attr-defined]  # bounded memory, any member count
                    if m.name == INDEX_NAME:  # the per-file hashes: not data, not counted
                        if index_seen or not m.isreg():
                            raise ValueError(f"{INDEX_NAME} is not one regular file")
                        index_seen = True
                        content.start(m)
                        content.hash = None  # the index is not data: not in the record it is held to
                        if cap is not None and cap.index is not None:  # the drill's copy, in its scratch
                            index_file = cap.index
                            cap.has_index = True
                            _copy_index(tar, m, index_file)
                        else:
                            read_member(tar, m, hasher=content.spool_index())
                            index_file = content.index
                        continue
                    last_name = m.name
                    count += 1
                    why = member_limits_error(m)
                    if why:  # no file system holds it: a restore of it could only ever fail
                        raise StopVerify(f"refusing member {m.name!r}: {why}")
                    if cap is not None and cap.member is not None:
                        cap.member(m)
                    if collect_members:
                        res.members.append(Member(m.name, m.type, m.size, m.linkname))
                    content.start(m)
                    if visit is not None:
                        visit(tar, m)
                    elif m.isreg():
                        read_member(tar, m)
                    content.finish(m)
                if first:
                    raise ValueError("archive is empty")
                if res.end is None:
                    raise ValueError(
                        f"end marker {END_NAME} missing: the archive is truncated (last member {last_name!r})"
                    )
                # read the codec's own trailer (gzip CRC, xz check, zstd checksum) to its end
                assert tar.fileobj is not None
                while tar.fileobj.read(CHUNK):
                    pass
                if index_seen and index_file is not None and content.f is not None:
                    index_error = content.compare(index_file)
                elif not index_seen and res.end.get("index"):
                    index_error = (
                        f"the archive's end marker names an index ({res.end['index']}) that the archive lacks"
                    )
        except (Interrupted, LocalFault):  # a write of ours failed: nothing is concluded about the archive
            progress.end()
            raise
        except StopVerify as e:  # the visitor refused a member: no point reading further
            stream_error = str(e)
        except STREAM_ERRORS as e:  # only what a damaged stream raises; our own bugs propagate
            if hr.io_error is not None or isinstance(e, MemoryError):
                unreadable = hr.io_error or e
            else:
                stream_error = (
                    f"archive stream is corrupt: {e}" if str(e) else f"archive stream is corrupt: {e!r}"
                )
        if unreadable is None:
            try:
                hr.drain()
            except OSError as e:
                unreadable = e
    progress.end()
    if unreadable is not None:  # the digest covers part of the file only: it proves nothing
        res = could_not_check(res, unreadable)
        if cap is not None:
            cap.result = res
            if cap.done is not None:
                cap.done(res)
        return res
    digest = hr.sha.hexdigest()
    res.sha256 = digest
    res.file_count = count
    count_error = None
    if res.end is not None and res.end.get("file_count") != count:
        count_error = (
            f"member count mismatch: archive holds {count} members, "
            f"its end marker says {res.end.get('file_count')}"
        )
    manifest_ok = not expected_sha256 or digest == expected_sha256
    # intact: it reads to its end, its count is right, and one of the two checksums it is held to
    # matches; only the other record is damaged, and it is never deleted for that
    side_ok = sidecar and side is not None and side != "" and digest == side
    stream_error = stream_error or index_error
    if content.lost and not stream_error:
        res.note = f"{res.note}; {content.lost}" if res.note else content.lost
    res.archive_intact = (manifest_ok or side_ok) and not stream_error and not count_error
    if side_error:
        res.error = side_error
    elif sidecar and side is not None and digest != side:
        res.error = (
            f"checksum mismatch: {path.name} has sha256 {digest[:16]}…, "
            f"{sidecar_path(path).name} says {side[:16]}…"
        )
    elif not manifest_ok:
        res.error = (
            f"checksum mismatch: {path.name} has sha256 {digest[:16]}…, "
            f"the manifest says {expected_sha256[:16]}…"  # type: ignore[index]
        )
    else:
        res.error = stream_error or count_error
    res.ok = res.error is None
    if cap is not None:
        cap.result = res
        if cap.done is not None:
            cap.done(res)
    return res


def could_not_check(res: VerifyResult, e: BaseException) -> VerifyResult:
    """The archive could not be read to its end: nothing is known about it."""
    why = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
    if isinstance(e, MemoryError):
        why = "out of memory"
    elif isinstance(e, Interrupted):
        why = "interrupted"
    res.ok, res.checked, res.archive_intact = False, False, False
    res.error = (
        f"could not check {res.path.name}: {why} (the archive itself may be fine; nothing was concluded)"
    )
    return res


def _read_json(tar: tarfile.TarFile, m: tarfile.TarInfo) -> dict[str, Any]:
    f = tar.extractfile(m)
    if f is None or m.size > (1 << 20):
        raise ValueError(f"{m.name} is not a small regular file")
    obj = json.loads(f.read())
    if not isinstance(obj, dict):
        raise ValueError(f"{m.name} is not a JSON object")
    return obj
