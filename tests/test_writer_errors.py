"""A write error in the middle of an archive (a real full disk) must stop the codec's threads
before the error reaches the caller: in the long-running service a late write from a compressor
thread could otherwise land in a reused file descriptor, and a CLI process could hang at exit
waiting for a thread blocked on a full queue (issue 13)."""

from __future__ import annotations

import os
import threading
from datetime import datetime
from pathlib import Path

import pytest
from gofrtest import write
from test_faults import small_fs  # noqa: F401  (fixture: a real 8 MB tmpfs)

from gofr_common.backup import BackupConfig
from gofr_common.backup.writer import write_archive


@pytest.mark.parametrize("codec", ["gzip", "zstd", "bzip2", "xz", "none"])
def test_a_full_disk_stops_the_codec_threads_before_the_error_is_raised(
    tmp_path: Path,
    small_fs: Path,  # noqa: F811
    codec: str,
) -> None:
    data = tmp_path / "data"
    write(data / "s" / "random.bin", os.urandom(24 << 20))  # does not compress: fills the 8 MB tmpfs
    env = {
        "GOFR_PROJECT": "plot",
        "GOFR_PLOT_BACKUP_DATA_DIR": str(data),
        "GOFR_PLOT_BACKUP_DIR": str(small_fs),
        "GOFR_PLOT_BACKUP_PATHS": "s:s",
        "GOFR_PLOT_BACKUP_COMPRESSION": codec,
        "GOFR_PLOT_BACKUP_COMPRESSION_LEVEL": "1",
    }
    config = BackupConfig.from_env(env=env)
    before = set(threading.enumerate())
    with pytest.raises(OSError) as ei:
        # the estimate from an earlier, compressible archive passes; the disk fills up mid-write
        write_archive(config, "daily", datetime.now().astimezone(), expected_ratio=0.01)
    assert "No space left" in str(ei.value)
    leftover = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leftover == [], f"codec threads still running after the error: {leftover}"
    assert list(small_fs.rglob("*.partial")) == []


def test_a_stop_does_not_compress_the_backlog_first() -> None:
    """A SIGTERM or an error mid-archive stops the xz/bzip2 compressor thread after the piece it is
    compressing: the queued pieces and the trailer (whose output is thrown away anyway) are not
    compressed first. Under load that backlog made a stop take over 10 s (docker stop's grace)."""
    import io
    import lzma

    from gofr_common.backup.codecs import CHUNK, ThreadedCompressor, close_after_error

    started, release = threading.Event(), threading.Event()
    calls = {"compress": 0, "flush": 0}

    class Recording:
        """A real LZMA compressor that records its calls and holds the first piece until told."""

        def __init__(self) -> None:
            self.inner = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=0)

        def compress(self, b: bytes) -> bytes:
            calls["compress"] += 1
            started.set()
            release.wait(10)
            return self.inner.compress(b)

        def flush(self) -> bytes:
            calls["flush"] += 1
            return self.inner.flush()

    out = io.BytesIO()
    w = ThreadedCompressor(out, Recording())
    w.write(os.urandom(CHUNK))  # the piece being compressed when the stop comes
    assert started.wait(10)
    w.write(os.urandom(2 * CHUNK) + b"tail")  # the backlog: two queued pieces and a partial one
    stopper = threading.Thread(target=close_after_error, args=(w,))
    stopper.start()
    release.set()
    stopper.join(10)
    assert not stopper.is_alive() and not w.thread.is_alive()
    assert calls == {"compress": 1, "flush": 0}, calls
