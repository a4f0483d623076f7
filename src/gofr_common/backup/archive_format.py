"""The archive format: a normal POSIX/PAX tar (GNU tar reads it), compressed by one codec.

Members, in order:
  .gofr-backup.json       first: describes the archive on its own (project, tier, created,
                          name -> path mapping, tool version, planned file count and bytes,
                          followed top-level links, the backup dir left out of a path)
  <name>/...              one tree per _PATHS entry, stored under its *name*
  .gofr-backup-end.json   last: what was actually written (file count, bytes, warnings,
                          unreadable paths). Its presence proves the stream is complete (zstd and
                          plain tar do not detect truncation on their own).
File names and sidecars belong to layout.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import __version__
from .codecs import CHUNK, ReadAhead, codec_for_filename
from .errors import BackupError

if TYPE_CHECKING:
    from .config import BackupConfig
    from .scan import Survey

META_NAME = ".gofr-backup.json"
END_NAME = ".gofr-backup-end.json"
FORMAT_VERSION = 1


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
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        raise BackupError(f"{path.name}: cannot read archive header: {e}") from None
    if not isinstance(meta, dict):
        raise BackupError(f"{path.name}: archive header is not a JSON object")
    return meta
