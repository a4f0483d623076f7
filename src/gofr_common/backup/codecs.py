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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, cast

CHUNK = 1 << 20
ZSTD_JOB = 2 << 20  # zstd's minimum is 512 KiB; smaller costs ratio and speed


def decode_errors() -> tuple[type[BaseException], ...]:
    """What the decompressors raise on a damaged stream (imported on first use, as the codecs are)."""
    import zlib

    import zstandard
    from zlib_ng import zlib_ng

    return (zlib.error, zlib_ng.error, lzma.LZMAError, zstandard.ZstdError)  # type: ignore[return-value]


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
    if threads == 1:
        cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
    else:
        # zstd's own job size at level 3 is 8 MiB and it keeps several jobs' input and output
        # per worker (~105 MB at 2 threads); ZSTD_JOB bounds that
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=threads, job_size=ZSTD_JOB, write_checksum=1
        )
        cctx = zstandard.ZstdCompressor(compression_params=params)
    return cctx.stream_writer(raw, closefd=False)


def _zstd_reader(raw: IO[bytes]) -> Any:
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)


class ThreadedCompressor:
    """Feeds a one-shot compressor (bz2, lzma) in a thread of its own, so that reading and
    archiving the next files overlaps with compressing the last ones (both release the GIL).
    Memory is bounded, and so is how long a stop waits: at most QUEUE pieces of CHUNK bytes are
    queued."""

    QUEUE = 2

    def __init__(self, raw: IO[bytes], compressor: Any) -> None:
        import queue
        import threading

        self.raw = raw
        self.comp = compressor
        self.buf = bytearray()
        self.q: Any = queue.Queue(self.QUEUE)
        self.error: BaseException | None = None
        self.aborted = False
        self.thread = threading.Thread(target=self._run, name="gofr-compress", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while (chunk := self.q.get()) is not None:
                if self.aborted:
                    continue  # the output is thrown away: compressing the backlog is wasted time
                out = self.comp.compress(chunk)
                if out:
                    self.raw.write(out)
            if not self.aborted:
                self.raw.write(self.comp.flush())
        except BaseException as e:  # noqa: BLE001 - handed to the writer
            self.error = e
            while self.q.get() is not None:  # drain so the writer never blocks
                pass

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def write(self, b: Any) -> int:
        self._check()
        for piece in _pieces(self.buf, b, CHUNK):  # 1 MiB: the backlog (and a stop's wait) stays small
            self.q.put(piece)
        return len(b)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.buf:
            self.q.put(bytes(self.buf))
            self.buf.clear()
        self.q.put(None)
        self.thread.join()
        self._check()

    def abort(self) -> None:
        """Stop after the piece being compressed now, without compressing the backlog or writing
        the trailer (a stop or an error: the output is discarded); the thread is joined."""
        self.aborted = True
        self.buf.clear()
        self.q.put(None)
        self.thread.join()


def _pieces(buf: bytearray, b: Any, size: int) -> Iterator[bytes]:
    """Cut what is in ``buf`` plus ``b`` into pieces of ``size`` bytes; keep the rest in ``buf``."""
    view = memoryview(b).cast("B")
    if buf:
        take = size - len(buf)
        buf += view[:take]
        view = view[take:]
        if len(buf) < size:
            return
        yield bytes(buf)
        buf.clear()
    while len(view) >= size:
        yield bytes(view[:size])
        view = view[size:]
    buf += view


class ParallelCompressor:
    """Compresses pieces of the stream as independent streams on all cores and writes them in
    order: the result is one concatenated (multi-stream) file, which the codec's CLI, GNU tar and
    Python all read as one (pbzip2 writes the same). Used for bzip2, whose blocks are independent
    anyway, so cutting at PIECE costs almost nothing in size. At most ``workers + 1`` pieces are
    in flight, which bounds memory and how long a stop waits."""

    PIECE = 4 << 20

    def __init__(self, raw: IO[bytes], compress: Callable[[bytes], bytes], workers: int) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.raw = raw
        self.compress = compress
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gofr-compress")
        self.limit = workers + 1
        self.pending: Any = deque()
        self.buf = bytearray()
        self.submitted = 0

    def _submit(self, piece: bytes) -> None:
        self.submitted += 1
        self.pending.append(self.pool.submit(self.compress, piece))
        while len(self.pending) >= self.limit:
            self.raw.write(self.pending.popleft().result())

    def write(self, b: Any) -> int:
        for piece in _pieces(self.buf, b, self.PIECE):
            self._submit(piece)
        return len(b)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        try:
            if self.buf or not self.submitted:  # an empty input still makes one valid (empty) stream
                self._submit(bytes(self.buf))
                self.buf.clear()
            while self.pending:
                self.raw.write(self.pending.popleft().result())
        finally:
            for f in self.pending:
                f.cancel()
            self.pool.shutdown(wait=True)

    def abort(self) -> None:
        """Cancel the pieces not started, wait for those being compressed, write nothing more."""
        self.buf.clear()
        self.pending.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)  # cancels every piece not started


class ReadAhead(io.RawIOBase):
    """Reads ``src`` (a decompressing stream, which hashes the file under it) in a thread of its
    own, up to DEPTH blocks ahead, so that decompressing and hashing overlap with whatever the
    reader does with the data (parsing tar, writing files): the two halves of ``tar -xz``'s
    pipeline. The libraries release the GIL while they work. An error in the thread is raised in
    the reader where the data would have been. ``close`` stops the thread before returning, so
    the file under ``src`` is the caller's again."""

    DEPTH = 4

    def __init__(self, src: IO[bytes], block: int = CHUNK) -> None:
        import queue
        import threading

        self.src = src
        self.block = block
        self.q: Any = queue.Queue(self.DEPTH)
        self.stopping = threading.Event()
        self.cur = memoryview(b"")
        self.finished = False
        self.thread = threading.Thread(target=self._run, name="gofr-read-ahead", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                b = self.src.read(self.block)
                self._put(b)
                if not b:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the reader
            self._put(e)

    def _put(self, item: Any) -> None:
        import queue

        while not self.stopping.is_set():
            try:
                self.q.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if not self.cur:
            if self.finished:
                return 0
            item = self.q.get()
            if isinstance(item, BaseException):
                self.finished = True
                raise item
            if not item:
                self.finished = True
                return 0
            self.cur = memoryview(item)
        n = min(len(b), len(self.cur))
        b[:n] = self.cur[:n]
        self.cur = self.cur[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self.stopping.set()
            self.thread.join()
            super().close()


def _bz2_writer(raw: IO[bytes], level: int) -> Any:
    workers = cpu_threads()
    if workers == 1:
        return ThreadedCompressor(raw, bz2.BZ2Compressor(level))
    return ParallelCompressor(raw, lambda piece: bz2.compress(piece, level), workers)


def _bz2_reader(raw: IO[bytes]) -> Any:
    return bz2.BZ2File(_NoClose(raw), "rb")


def _xz_writer(raw: IO[bytes], level: int) -> Any:
    return ThreadedCompressor(
        raw, lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=level)
    )


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


def close_after_error(stream: IO[bytes]) -> None:
    """Close a writer after a failure elsewhere (a full disk, a stop): its threads are stopped and
    joined before this returns, so that none of them can write to the file under it afterwards;
    our own compressors (xz, bzip2) drop their backlog instead of compressing it first.
    Closing may fail again (it flushes into the same full disk); that error is not the news."""
    try:
        abort = getattr(stream, "abort", None)  # ours: stop without compressing the backlog
        abort() if abort is not None else stream.close()
    except BaseException:  # noqa: BLE001, S110 - the caller is already handling the first error
        pass


def default_level(name: str) -> int:
    return CODECS[name].default_level


def codec_for_filename(filename: str) -> Codec:
    """The codec of a (plain, not ``.age``) archive name."""
    for suffix in sorted(SUFFIXES, key=len, reverse=True):  # ".tar.gz" before ".tar"
        if filename.endswith(suffix):
            return SUFFIXES[suffix]
    raise ValueError(f"not a recognised archive name: {filename}")
