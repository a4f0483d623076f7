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
