"""The codec plumbing around the libraries: how writes are cut into pieces, and the parallel bzip2
writer's multi-stream output, checked against the real bz2 library and the bzip2 CLI."""

from __future__ import annotations

import bz2
import io
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st

from gofr_common.backup.codecs import ParallelCompressor, ThreadedCompressor, _pieces

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
