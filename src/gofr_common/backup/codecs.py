"""Compression codecs: one small interface, one entry per algorithm.

A writer wraps a binary file object that it does not own (closing the writer flushes the codec's
trailer but leaves the underlying file open); a reader likewise. The heavy lifting is done by
maintained libraries: zlib-ng (multi-threaded gzip), zstandard, and the stdlib's bz2 and lzma.
Every output is readable by the codec's own CLI and by GNU tar.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, cast

CHUNK = 1 << 20


def cpu_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class _NoClose(io.RawIOBase):
    """Passes writes/reads through to ``raw`` but never closes it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        return self._raw.write(b)

    def readinto(self, b: Any) -> int:
        data = self._raw.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.flush()
            finally:
                super().close()


def _gzip_writer(raw: IO[bytes], level: int) -> Any:
    from zlib_ng import gzip_ng_threaded

    threads = cpu_threads()
    if threads > 1:
        return gzip_ng_threaded.open(raw, "wb", compresslevel=level, threads=threads)
    from zlib_ng import gzip_ng

    return gzip_ng.GzipNGFile(fileobj=raw, mode="wb", compresslevel=level)


def _gzip_reader(raw: IO[bytes]) -> Any:
    from zlib_ng import gzip_ng

    return gzip_ng.GzipNGFile(fileobj=raw, mode="rb")


def _zstd_writer(raw: IO[bytes], level: int) -> Any:
    import zstandard

    threads = cpu_threads()
    cctx = zstandard.ZstdCompressor(level=level, threads=threads if threads > 1 else 0, write_checksum=True)
    return cctx.stream_writer(raw, closefd=False)


def _zstd_reader(raw: IO[bytes]) -> Any:
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)


def _bz2_writer(raw: IO[bytes], level: int) -> Any:
    return bz2.BZ2File(_NoClose(raw), "wb", compresslevel=level)


def _bz2_reader(raw: IO[bytes]) -> Any:
    return bz2.BZ2File(_NoClose(raw), "rb")


def _xz_writer(raw: IO[bytes], level: int) -> Any:
    return lzma.LZMAFile(cast(Any, _NoClose(raw)), "wb", preset=level, check=lzma.CHECK_CRC64)


def _xz_reader(raw: IO[bytes]) -> Any:
    return lzma.LZMAFile(cast(Any, _NoClose(raw)), "rb")


def _plain_writer(raw: IO[bytes], level: int) -> Any:
    return _NoClose(raw)


def _plain_reader(raw: IO[bytes]) -> Any:
    return _NoClose(raw)


@dataclass(frozen=True)
class Codec:
    name: str
    suffix: str  # ".tar.gz" etc.
    min_level: int
    max_level: int
    default_level: int
    writer: Callable[[IO[bytes], int], IO[bytes]]
    reader: Callable[[IO[bytes]], IO[bytes]]
    cli: tuple[str, ...]  # command that decompresses stdin to stdout (for docs and interop tests)


CODECS: dict[str, Codec] = {
    "gzip": Codec("gzip", ".tar.gz", 1, 9, 6, _gzip_writer, _gzip_reader, ("gzip", "-dc")),
    "bzip2": Codec("bzip2", ".tar.bz2", 1, 9, 6, _bz2_writer, _bz2_reader, ("bzip2", "-dc")),
    "xz": Codec("xz", ".tar.xz", 0, 9, 6, _xz_writer, _xz_reader, ("xz", "-dc")),
    "zstd": Codec("zstd", ".tar.zst", 1, 19, 3, _zstd_writer, _zstd_reader, ("zstd", "-dc")),
    "none": Codec("none", ".tar", 0, 9, 6, _plain_writer, _plain_reader, ("cat",)),
}

SUFFIXES = {c.suffix: c for c in CODECS.values()}


def default_level(name: str) -> int:
    return CODECS[name].default_level


def codec_for_filename(filename: str) -> Codec:
    filename = filename.removesuffix(".age")
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".tar"):
        if filename.endswith(suffix):
            return SUFFIXES[suffix]
    raise ValueError(f"not a recognised archive name: {filename}")
