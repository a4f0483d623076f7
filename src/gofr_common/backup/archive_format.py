"""The archive format: a normal POSIX/PAX tar (GNU tar reads it), compressed by one codec.

Members, in order:
  .gofr-backup.json       first: describes the archive on its own (project, tier, created,
                          name -> path mapping, tool version, planned file count and bytes,
                          followed top-level links, the backup dir left out of a path)
  <name>/...              one tree per _PATHS entry, stored under its *name*
  .gofr-backup-files.b3   (format 2) the BLAKE3 hash of every regular file's archived content, in
                          the ``b3sum`` format (``b3sum -c`` checks an extracted copy); written after
                          the data, from a temp file, so memory does not grow with the file count
  .gofr-backup-end.json   last: what was actually written (file count, bytes, warnings,
                          unreadable paths, the index's entry count). Its presence proves the stream
                          is complete (zstd and plain tar do not detect truncation on their own).
File names and sidecars belong to layout.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import tarfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import __version__
from .codecs import CHUNK, ReadAhead, codec_for_filename, decode_errors
from .config import is_path_name
from .errors import BackupError

if TYPE_CHECKING:
    from .config import BackupConfig
    from .scan import Survey

META_NAME = ".gofr-backup.json"
END_NAME = ".gofr-backup-end.json"
INDEX_NAME = ".gofr-backup-files.b3"
INDEX_HASH = "blake3"
FORMAT_VERSION = 2  # 2: the per-file hash index; format 1 archives have none
_HEX64 = re.compile(rb"[0-9a-f]{64}")
_FS_ENCODING = sys.getfilesystemencoding()  # os.fsencode's, without its cost per call
_MAX_LINE = 1 << 16  # a name is at most 4096 bytes (PATH_MAX), escaped at most twice that


class _TarfileRe:
    """The ``re`` module as tarfile sees it (installed just below), the same in all but speed.

    tarfile's pax parser (``TarInfo._proc_pax``, CPython 3.11) looks for a ``hdrcharset`` record
    anywhere in every pax header it reads with ``re.search(rb"\\d+ hdrcharset=([^\\n]+)\\n", buf)``.
    Over a directory's ``GNU.dumpdir`` (every entry's name, 8 KB a directory on average in the
    bench set) that search costs about 40 ns a byte: 1.6 s for the 29 incrementals of a 30-day
    chain, paid by each pass over them. The pattern cannot match where its keyword is absent, so
    the keyword is looked for first (a substring test, at memchr speed); every other call, and
    every header that holds the keyword, goes to ``re`` as before."""

    _HDRCHARSET = rb"\d+ hdrcharset=([^\n]+)\n"

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    def search(self, pattern: Any, string: Any, flags: int = 0) -> Any:
        if (
            pattern == self._HDRCHARSET
            and not flags
            and isinstance(string, bytes | bytearray)
            and b"hdrcharset=" not in string
        ):
            return None
        return re.search(pattern, string, flags)


tarfile.__dict__["re"] = _TarfileRe()


NAME_MAX = 255  # bytes in one name component: no Linux file system creates a longer one
PATH_MAX = 4095  # bytes in a whole name, or in a link's target (PATH_MAX less its NUL)
ID_MAX = 2**32 - 2  # uid/gid: (uid_t)-1 means "unchanged" to chown
MTIME_MAX = 2**62  # seconds; os.utime takes any of -MTIME_MAX..MTIME_MAX


def _nbytes(s: str) -> int:
    return len(s.encode("utf-8", "surrogateescape"))


def member_limits_error(m: tarfile.TarInfo) -> str | None:
    """Why no file system could hold member ``m`` as it is (a name component over NAME_MAX bytes, a
    name or link target over PATH_MAX bytes), or no system call takes its attributes (a pax record
    may hold anything: uid/gid, mtime out of range); None when it is within every limit. The
    archive's fault: ``verify`` fails it and a restore refuses it, rather than it failing later
    as if a write on this side had."""
    name = m.name.rstrip("/")
    long = next((p for p in name.split("/") if _nbytes(p) > NAME_MAX), None)
    if long is not None:
        return f"a name component of {_nbytes(long)} bytes (more than {NAME_MAX}: no file system holds it)"
    if _nbytes(name) > PATH_MAX:
        return f"its name is {_nbytes(name)} bytes long (more than {PATH_MAX})"
    if (m.issym() or m.islnk()) and _nbytes(m.linkname) > PATH_MAX:
        return f"its link target is {_nbytes(m.linkname)} bytes long (more than {PATH_MAX})"
    for what, v in (("uid", m.uid), ("gid", m.gid)):
        if not isinstance(v, int) or not 0 <= v <= ID_MAX:
            return f"its {what} {v!r} is out of range (0..{ID_MAX})"
    mt = m.mtime
    if not isinstance(mt, int | float) or not -MTIME_MAX <= mt <= MTIME_MAX:
        return f"its mtime {mt!r} is out of range (-2**62..2**62 seconds)"
    return None


def index_line(name: str, digest: str) -> bytes:
    """One line of the index, as ``b3sum`` writes it: ``<hex>  <name>``; a name holding a backslash
    or a newline is escaped (``\\\\``, ``\\n``) and its line starts with a backslash. Names are
    their bytes on disk (not valid UTF-8 is kept as is: ``b3sum -c`` cannot check those)."""
    if "\\" in name or "\n" in name:
        name = name.replace("\\", "\\\\").replace("\n", "\\n")
        return f"\\{digest}  {name}\n".encode(_FS_ENCODING, "surrogateescape")
    return f"{digest}  {name}\n".encode(_FS_ENCODING, "surrogateescape")


def parse_index_line(line: bytes) -> tuple[str, str]:
    """(name, hex digest) of one index line (without its newline). Raises ValueError."""
    escaped = line.startswith(b"\\")
    if escaped:
        line = line[1:]
    digest, sep, raw = line.partition(b"  ")
    if not sep or not raw or not _HEX64.fullmatch(digest):
        raise ValueError(f"malformed index line {line[:100]!r}")
    if escaped:
        out, i = bytearray(), 0
        while i < len(raw):
            c = raw[i : i + 1]
            if c == b"\\":
                nxt = raw[i + 1 : i + 2]
                if nxt not in (b"\\", b"n"):
                    raise ValueError(f"bad escape in index line {line[:100]!r}")
                out += b"\\" if nxt == b"\\" else b"\n"
                i += 2
            else:
                out += c
                i += 1
        raw = bytes(out)
    return os.fsdecode(raw), digest.decode()


def read_index(f: IO[bytes]) -> Iterator[tuple[str, str]]:
    """Every (name, digest) of an index file, streamed (memory does not grow with its size).
    Raises ValueError on a malformed line."""
    f.seek(0)
    while line := f.readline(_MAX_LINE):
        if not line.endswith(b"\n"):
            raise ValueError(f"index line longer than {_MAX_LINE} bytes or unterminated: {line[:100]!r}")
        yield parse_index_line(line[:-1])


HEADER_NAMED = ("paths", "kinds", "resolved_paths")  # the header's maps keyed by a path's name


def header_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with the path names an archive's header declares, or None. A restore joins
    each name onto its destination directory, so each must be one safe segment, by the rule that
    PATHS names follow (config.is_path_name): an absolute name or '..' would reach outside it."""
    for key in HEADER_NAMED:
        names = meta.get(key)
        if names is None:
            continue
        if not isinstance(names, dict):
            return f"its header's {key!r} is not a JSON object"
        for name in names:
            if not is_path_name(name):
                shown = name if len(name) <= 100 else name[:100] + "…"
                return f"its header declares a path named {shown!r}"
    return None


def build_meta(config: BackupConfig, tier: str, created: datetime, s: Survey) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "tool": "gofr-backup",
        "tool_version": __version__,
        "project": config.project,
        "tier": tier,
        "created": created.isoformat(),
        "compression": config.compression,
        "compression_level": config.compression_level,
        "hostname": os.uname().nodename,
        "paths": {p.name: p.raw for p in config.paths if p.name in s.kinds},
        "resolved_paths": {p.name: str(p.path) for p in config.paths if p.name in s.kinds},
        "kinds": s.kinds,
        # a configured path that is a symlink is archived as what it points at: name -> target
        "followed": s.followed,
        # the backup directory, met inside a path, is left out: name -> where, relative to it
        "left_out": s.left_out,
        "file_count": s.file_count,
        "source_bytes": s.source_bytes,
    }


@contextlib.contextmanager
def open_tar_stream(
    path: Path, raw: IO[bytes] | None = None, read_ahead: bool = False
) -> Iterator[tarfile.TarFile]:
    """Open an archive for one sequential pass (decompressing on the fly; with ``read_ahead``, in
    a thread of its own, for passes that read the whole archive)."""
    codec = codec_for_filename(path.name)
    f = raw if raw is not None else open(path, "rb")  # noqa: SIM115
    try:
        stream = codec.reader(f)
        ahead = ReadAhead(stream) if read_ahead else None
        try:
            src = io.BufferedReader(ahead, CHUNK) if ahead is not None else stream
            tar = tarfile.open(fileobj=src, mode="r|", encoding="utf-8", errors="surrogateescape")
            try:
                yield tar
            finally:
                tar.close()
        finally:
            if ahead is not None:
                ahead.close()  # the thread stops before the stream under it is closed
            stream.close()
    finally:
        if raw is None:
            f.close()


def read_meta(path: Path) -> dict[str, Any]:
    """Read only the first member (cheap: no need to decompress the whole archive)."""
    try:
        with open_tar_stream(path) as tar:
            first = tar.next()
            if first is None or first.name != META_NAME:
                raise BackupError(f"{path.name}: first member is not {META_NAME}; not a gofr-backup archive")
            f = tar.extractfile(first)
            assert f is not None
            meta = json.loads(f.read(1 << 20))
    except Exception as e:
        # a damaged stream, whatever the codec says it with (zlib's "invalid distance too far
        # back" in a small archive read whole here was an "unexpected error")
        if not isinstance(e, (tarfile.TarError, OSError, EOFError, ValueError, *decode_errors())):
            raise
        raise BackupError(f"{path.name}: cannot read archive header: {e}") from None
    if not isinstance(meta, dict):
        raise BackupError(f"{path.name}: archive header is not a JSON object")
    return meta
