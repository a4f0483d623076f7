"""The codec plumbing around the libraries: how writes are cut into pieces, and the parallel bzip2
writer's multi-stream output, checked against the real bz2 library and the bzip2 CLI."""

from __future__ import annotations

import bz2
import io
import subprocess
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from gofr_common.backup.codecs import ParallelCompressor, ReadAhead, ThreadedCompressor, _pieces

writes = st.lists(st.binary(max_size=300), max_size=40)


@given(writes, st.integers(1, 64))
def test_pieces_are_exact_and_lose_nothing(chunks: list[bytes], size: int) -> None:
    buf = bytearray()
    out: list[bytes] = []
    for c in chunks:
        out += _pieces(buf, c, size)
    assert all(len(p) == size for p in out)
    assert len(buf) < size
    assert b"".join(out) + bytes(buf) == b"".join(chunks)


class _Small(ParallelCompressor):
    PIECE = 97  # many pieces from little data


@settings(max_examples=60, deadline=None)
@given(writes, st.integers(1, 3))
def test_parallel_bzip2_is_the_input_in_order(chunks: list[bytes], workers: int) -> None:
    raw = io.BytesIO()
    w = _Small(raw, lambda piece: bz2.compress(piece, 1), workers)
    for c in chunks:
        w.write(c)
    w.close()
    data = b"".join(chunks)
    assert bz2.decompress(raw.getvalue()) == data
    streams = raw.getvalue().count(b"BZh1")  # every piece is a stream of its own
    assert streams >= max(1, -(-len(data) // _Small.PIECE))


def test_parallel_bzip2_output_is_read_by_the_bzip2_cli() -> None:
    data = b"".join(b"%d some text\n" % i for i in range(400_000))  # ~5 MB: two 4 MiB pieces
    raw = io.BytesIO()
    w = ParallelCompressor(raw, lambda piece: bz2.compress(piece, 6), 2)
    w.write(data)
    w.close()
    out = subprocess.run(["bzip2", "-dc"], input=raw.getvalue(), capture_output=True, check=True).stdout
    assert out == data


def test_a_compressor_error_reaches_the_writer() -> None:
    def broken(piece: bytes) -> bytes:
        raise MemoryError("no memory for the compressor")

    w = ParallelCompressor(io.BytesIO(), broken, 2)
    try:
        for _ in range(3):
            w.write(bytes(ParallelCompressor.PIECE))
        w.close()
    except MemoryError as e:
        assert "no memory" in str(e)
    else:
        raise AssertionError("the error was swallowed")


def test_threaded_xz_writes_one_stream_in_order() -> None:
    import lzma

    data = bytes(range(256)) * 20_000  # 5 MB: several 1 MiB queue pieces
    raw = io.BytesIO()
    t = ThreadedCompressor(raw, lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=0))
    for i in range(0, len(data), 300_001):
        t.write(data[i : i + 300_001])
    t.close()
    assert lzma.decompress(raw.getvalue()) == data


class _Source(io.RawIOBase):
    """An endless stream that fails after ``fail_after`` reads, if set."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.reads = 0
        self.fail_after = fail_after

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise EOFError("compressed file ended before the end-of-stream marker")
        return bytes([self.reads % 256]) * 1000


def test_read_ahead_gives_the_data_in_order_then_the_error_where_it_happened() -> None:
    r = ReadAhead(_Source(fail_after=5), block=1000)
    got = b""
    try:
        while b := r.read(700):
            got += b
    except EOFError as e:
        assert "end-of-stream" in str(e)
    else:
        raise AssertionError("the error was lost")
    assert got == b"".join(bytes([i]) * 1000 for i in range(1, 6))
    r.close()


def test_read_ahead_stops_its_thread_on_close_and_stays_bounded() -> None:
    src = _Source()
    ahead = ReadAhead(src, block=1000)
    assert ahead.read(10) == bytes([1]) * 10
    time.sleep(0.2)
    assert src.reads <= ReadAhead.DEPTH + 2  # bounded: it does not run away with the input
    ahead.close()
    assert not ahead.thread.is_alive()
    n = src.reads
    time.sleep(0.1)
    assert src.reads == n  # the file under it is the caller's again
