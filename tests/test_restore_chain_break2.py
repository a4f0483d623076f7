"""Breaking the chain restore's plan (commit 451a3bf): cases where restoring a chain must give
exactly the tree of that day (and what GNU tar alone gives), and where it did not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gofrtest import run_cli, snapshot, write
from test_restore_chain import T0, TAR, Chain, gnu_restore
from test_restore_chain_plan import restore_into_small_disk

pytestmark = pytest.mark.skipif(TAR is None, reason="GNU tar is not installed")


def test_a_rewind_with_a_configured_file_staged_before_it(tmp_path: Path) -> None:
    """PATHS lists a file (cfg: config.json) before a directory whose chain makes the pass start
    again (x: a file in the full, a directory on day 1, where a directory was made beforehand).
    The file is already staged when the pass starts again: it must be cleared like a directory,
    not refused with 'cannot stage the restore: Not a directory'."""
    data = tmp_path / "data"
    live = data / "storage"
    write(live / "x", "file x", 0o644, T0)
    write(data / "config.json", "{}", 0o644, T0)
    ch = Chain(data, tmp_path / "backups", "cfg:config.json,storage:storage")
    ch.day(0)
    (live / "x").unlink()
    write(live / "x" / "f.txt", "now a dir", 0o644, T0 + 1)
    ch.day(1)
    want = snapshot(live)
    out = tmp_path / "out"
    r = run_cli("restore", ch.results[1].filename, "--target", str(out), "--yes", env=ch.env)
    assert r.returncode == 0, r.stderr
    assert snapshot(out / "storage") == want
    assert (out / "cfg").read_text() == "{}"
    assert sorted(os.listdir(out)) == ["cfg", "storage"]
    gnu_restore(ch.archives(1), tmp_path / "gnu")
    assert snapshot(tmp_path / "gnu" / "storage") == want


def test_a_drill_of_a_chain_whose_restore_starts_again(tmp_path: Path) -> None:
    """x is a directory in the full, a file on day 1, a directory again on day 2: the day-1 file
    lands where the restore made a directory beforehand, so the restore starts again after the
    full's pass. The drill's record of the passes must start again with it: it failed with 'the
    restore read 4 archive(s); the chain has 3' (and was recorded as a failed drill)."""
    import json
    import shutil

    data = tmp_path / "data"
    live = data / "storage"
    write(live / "x" / "in", "x dir", 0o644, T0)
    write(live / "keep", "k", 0o644, T0)
    ch = Chain(data, tmp_path / "backups", "storage:storage")
    ch.day(0)
    shutil.rmtree(live / "x")
    write(live / "x", "x file", 0o644, T0 + 1)
    ch.day(1)
    (live / "x").unlink()
    write(live / "x" / "in2", "x dir again", 0o644, T0 + 2)
    ch.day(2)
    r = run_cli("drill", ch.results[2].filename, "--json", env=ch.env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is True and out["chain"] == 3, out
    assert out["checks"]["tree"] == len(snapshot(live)), out


def test_a_deleted_big_file_and_a_file_that_becomes_a_directory_fit_a_small_disk(tmp_path: Path) -> None:
    """A 10 MB file in the full, deleted on day 1, restores into an 8 MB tmpfs (451a3bf's point),
    also when the same chain turns a file (x) into a directory: the full's x is not written either
    (day 1 stores x again), so the directory made beforehand at x is no reason to start again
    writing everything (which needed room for the 10 MB file: 'claims 10485760 bytes, more than
    the ... free')."""
    data = tmp_path / "data"
    live = data / "storage"
    write(live / "big.bin", os.urandom(10 << 20), 0o644, T0)
    write(live / "x", "file x", 0o644, T0)
    write(live / "keep.txt", "kept", 0o644, T0)
    ch = Chain(data, tmp_path / "backups", "storage:storage")
    ch.day(0)
    (live / "big.bin").unlink()
    (live / "x").unlink()
    write(live / "x" / "f.txt", "now a dir", 0o644, T0 + 1)
    ch.day(1)
    want = snapshot(live)
    restore_into_small_disk(ch, 1, want, tmp_path)
    gnu_restore(ch.archives(1), tmp_path / "gnu")
    assert snapshot(tmp_path / "gnu" / "storage") == want


@pytest.mark.parametrize("how", ["deleted", "renamed"])
def test_a_big_file_whose_directory_a_later_day_removes_fits_a_small_disk(tmp_path: Path, how: str) -> None:
    """A 10 MB file in storage/cache/ of the full; day 1 removes (or renames) the whole directory:
    the last archive has no listing of storage/cache, but storage's listing leaves it out, so
    nothing below it survives and nothing below it need be written. Into an 8 MB tmpfs (before:
    'claims 10485760 bytes, more than the ... free', as if the directory were still there)."""
    import shutil

    data = tmp_path / "data"
    live = data / "storage"
    write(live / "cache" / "deep" / "big.bin", os.urandom(10 << 20), 0o644, T0)
    write(live / "keep.txt", "kept", 0o644, T0)
    ch = Chain(data, tmp_path / "backups", "storage:storage")
    ch.day(0)
    if how == "deleted":
        shutil.rmtree(live / "cache")
    else:
        (live / "cache" / "deep" / "big.bin").write_bytes(b"small now")
        os.rename(live / "cache", live / "cache2")
    ch.day(1)
    want = snapshot(live)
    restore_into_small_disk(ch, 1, want, tmp_path)
