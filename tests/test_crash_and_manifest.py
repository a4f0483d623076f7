"""A killed backup leaves nothing that looks finished; the manifest survives loss and corruption."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from gofrtest import manifest, popen_cli, run_cli, write

KEYS = (
    "filename",
    "path",
    "tier",
    "created",
    "size_bytes",
    "sha256",
    "compression",
    "file_count",
    "source_bytes",
)


def _big(app: dict[str, Any], mb: int = 32) -> None:
    # incompressible, so xz takes seconds: long enough to kill mid-write
    for i in range(mb // 8):
        write(app["data"] / "storage" / "big" / f"blob{i}.bin", os.urandom(8 << 20))


def _wait_for_partial(backups: Path, proc: Any, min_bytes: int = 1 << 16, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in (backups / "daily").glob("*.partial") if (backups / "daily").is_dir() else []:
            if p.stat().st_size >= min_bytes:
                return p
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("no partial archive appeared")


def test_sigkill_mid_write_leaves_no_archive_and_next_run_succeeds(app: dict[str, Any]) -> None:
    _big(app)
    env = {**app["env"], "GOFR_PLOT_BACKUP_COMPRESSION": "xz"}
    assert run_cli("now", env={**env, "GOFR_PLOT_BACKUP_PATHS": "auth:auth"}).returncode == 0
    before = manifest(app["backups"])
    proc = popen_cli("now", env=env)
    partial = _wait_for_partial(app["backups"], proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = [
        p
        for p in (app["backups"] / "daily").iterdir()
        if not p.name.endswith((".partial", ".sha256")) and p.name != before[0]["filename"]
    ]
    assert finished == [], "a killed backup must not leave anything that looks like a finished archive"
    assert manifest(app["backups"]) == before
    assert partial.exists()  # what the dead process left ...
    fast = {**env, "GOFR_PLOT_BACKUP_COMPRESSION": "gzip", "GOFR_PLOT_BACKUP_COMPRESSION_LEVEL": "1"}
    r = run_cli("now", "--json", env=fast)
    assert r.returncode == 0, r.stderr
    assert not partial.exists()  # ... is cleaned up by the next run
    assert json.loads(r.stdout)["verified"] is True
    assert len(manifest(app["backups"])) == 2
    assert run_cli("verify", "--all", env=fast).returncode == 0


def test_sigterm_mid_write_removes_partial(app: dict[str, Any]) -> None:
    _big(app)
    env = {**app["env"], "GOFR_PLOT_BACKUP_COMPRESSION": "xz"}
    proc = popen_cli("now", env=env)
    _wait_for_partial(app["backups"], proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 1 and "interrupted" in err
    assert list((app["backups"] / "daily").iterdir()) == []
    assert manifest(app["backups"]) == []


def test_deleted_manifest_is_rebuilt_with_the_same_entries(app: dict[str, Any]) -> None:
    for tier in ("daily", "daily", "weekly", "monthly"):
        assert run_cli("now", "--tier", tier, env=app["env"]).returncode == 0
    before = manifest(app["backups"])
    (app["backups"] / "manifest.json").unlink()
    r = run_cli("list", "--json", env=app["env"])  # list shows them, but never writes (issue 13)
    assert r.returncode == 0 and "4 archive(s) rebuilt from the archives" in r.stderr
    assert len(json.loads(r.stdout)["backups"]) == 4
    assert not (app["backups"] / "manifest.json").exists()
    r = run_cli("prune", env=app["env"])
    assert r.returncode == 0
    assert "rebuilt from 4 archive(s)" in r.stderr
    after = manifest(app["backups"])
    assert [{k: e[k] for k in KEYS} for e in after] == [{k: e[k] for k in KEYS} for e in before]
    # verification state is not in the archives: rebuilt entries say "not verified", never "failed"
    assert all(e["verified"] is None for e in after)


def test_corrupt_manifest_is_kept_aside_and_rebuilt(app: dict[str, Any]) -> None:
    assert run_cli("now", env=app["env"]).returncode == 0
    before = manifest(app["backups"])
    (app["backups"] / "manifest.json").write_text('{"backups": [ {"filename": tru')
    r = run_cli("list", "--json", env=app["env"])
    assert r.returncode == 0 and "unreadable" in r.stderr
    assert not list(app["backups"].glob("manifest.json.corrupt-*"))  # list never writes
    r = run_cli("prune", env=app["env"])
    assert r.returncode == 0 and "unreadable" in r.stderr
    aside = list(app["backups"].glob("manifest.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text().startswith('{"backups"')
    assert [e["sha256"] for e in manifest(app["backups"])] == [before[0]["sha256"]]
    # and it is never silently emptied: a following backup keeps the old entry
    assert run_cli("now", env=app["env"]).returncode == 0
    assert len(manifest(app["backups"])) == 2


def test_manifest_write_is_atomic_no_temp_files_left(app: dict[str, Any]) -> None:
    for _ in range(3):
        assert run_cli("now", env=app["env"]).returncode == 0
    stray = [p.name for p in app["backups"].iterdir() if p.name.endswith(".tmp")]
    assert stray == []
    mode = (app["backups"] / "manifest.json").stat().st_mode & 0o777
    assert mode in (0o600, 0o640)
