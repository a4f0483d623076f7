"""Source spot checks (issue 14): a real archive against the real source, changed for real after the
backup; the CLI as a subprocess, SIGTERM for real; the service's own check after a scheduled backup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gofrtest import SimClock, cli_env, popen_cli, run_cli, write

from gofr_common.backup import BackupConfig, BackupService

T0 = 1_700_000_000  # well before any archive


def state(backups: Path) -> dict[str, Any]:
    return json.loads((backups / ".gofr-plot.state.json").read_text())


def setup_app(tmp: Path, **extra: str) -> tuple[Path, Path, dict[str, str]]:
    data, backups = tmp / "data", tmp / "backups"
    for i in range(20):
        write(data / "storage" / f"d{i % 3}" / f"f{i}.txt", f"file {i}\n" * 50, mtime=T0)
    write(data / "storage" / "cache" / "x.tmp", "excluded", mtime=T0)
    write(data / "auth" / "tokens.json", '{"t": 1}', 0o600, T0)
    for d in (data / "storage" / "d0", data / "storage" / "d1", data / "storage" / "d2", data / "storage"):
        os.utime(d, (T0, T0))
    env = cli_env(
        data,
        backups,
        **{
            "GOFR_{P}_BACKUP_PATHS": "storage:storage,auth:auth",
            "GOFR_{P}_BACKUP_EXCLUDE": "cache/",
            **extra,
        },
    )
    r = run_cli("now", env=env)
    assert r.returncode == 0, r.stderr
    return data, backups, env


def test_a_clean_source_passes(tmp_path: Path) -> None:
    data, backups, env = setup_app(tmp_path)
    r = run_cli("check-source", "--sample", "100", "--json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(r.stdout)
    assert d["ok"] and d["missing"] == 0 and d["drift"] == 0
    # every entry older than the archive but the excluded cache/: 21 files, storage, d0-d2 and auth
    assert d["sampled"] == 21 and d["files"] == 26
    assert state(backups)["last_spot_check"] == d
    assert json.loads((backups / "manifest.json").read_text())["backups"][0]["spot_check"] == d


def test_a_file_older_than_the_archive_that_it_lacks_is_missing(tmp_path: Path) -> None:
    data, backups, env = setup_app(tmp_path)
    write(data / "storage" / "d1" / "late-but-old.txt", "the backup never saw me", mtime=T0)
    write(data / "storage" / "new.txt", "new since the backup: not expected")  # mtime now
    write(data / "storage" / "cache" / "old.tmp", "excluded", mtime=T0)
    os.utime(data / "storage" / "d1", (T0, T0))
    r = run_cli("check-source", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    missing = str(data / "storage" / "d1" / "late-but-old.txt")
    assert f"missing: {missing}" in r.stdout
    assert "2 newer" in r.stdout  # new.txt, and storage/ itself
    d = state(backups)["last_spot_check"]
    assert d["ok"] is False and d["missing"] == 1 and d["missing_paths"] == [missing]
    # storage/ itself changed (new.txt): 25 old entries and the late one
    assert d["error"].startswith("1 of 26 source entries older than the archive are missing from it")
    r = run_cli("status", env=env)
    assert r.returncode == 1 and missing in r.stdout and "spot check" in r.stdout
    # within a tolerance it passes, and says so
    env["GOFR_PLOT_BACKUP_SPOT_CHECK_TOLERANCE"] = "5"
    r = run_cli("check-source", "--json", env=env)
    assert r.returncode == 0
    assert any("within the tolerance" in n for n in json.loads(r.stdout)["notes"])
    assert run_cli("status", env=env).returncode == 0


def test_a_change_without_an_mtime_change_is_drift(tmp_path: Path) -> None:
    data, backups, env = setup_app(tmp_path)
    f = data / "storage" / "d2" / "f5.txt"
    st = f.stat()
    f.write_bytes(f.read_bytes().replace(b"file 5", b"FILE 5"))  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = run_cli("check-source", "--sample", "100", "--json", env=env)
    assert r.returncode == 1
    d = json.loads(r.stdout)
    assert d["drift"] == 1 and d["drift_paths"] == [str(f)] and d["missing"] == 0
    assert "differ from the archive although their size and mtime match" in d["error"]
    # with no sample the content is not read, and nothing is found
    r = run_cli("check-source", "--sample", "0", "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["sampled"] == 0


def test_a_size_change_without_an_mtime_change_is_drift_even_unsampled(tmp_path: Path) -> None:
    """A file truncated (or grown) with its mtime put back: no sample reads it (its size differs
    from the archive's), yet it is not newer and not missing; it is drift, found by a stat."""
    data, backups, env = setup_app(tmp_path)
    f = data / "storage" / "d1" / "f4.txt"
    st = f.stat()
    f.write_bytes(b"")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    for sample in ("100", "0"):
        r = run_cli("check-source", "--sample", sample, "--json", env=env)
        assert r.returncode == 1, r.stdout
        d = json.loads(r.stdout)
        assert d["size_drift"] == 1 and d["size_drift_paths"] == [str(f)], d
        assert "changed size without their mtime changing" in d["error"], d["error"]


def test_a_symlinked_path_is_looked_at_through_the_link(tmp_path: Path) -> None:
    """PATHS points at a symlink: the backup follows it (it once stored the bare link and none of
    the data), and the spot check looks through it too, so a file the archive lacks there is found."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    real = tmp_path / "volume" / "storage"
    for i in range(3):
        write(real / f"doc{i}.json", "{}", mtime=T0)
    data.mkdir()
    os.symlink(real, data / "storage")
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})
    assert run_cli("now", env=env).returncode == 0
    r = run_cli("check-source", "--json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["missing"] == 0
    write(real / "late.json", "{}", mtime=T0)  # old mtime, not in the archive: missing
    r = run_cli("check-source", "--json", env=env)
    assert r.returncode == 1
    d = json.loads(r.stdout)
    assert d["missing"] == 1 and any(p.endswith("late.json") for p in d["missing_paths"]), d


def test_sigterm_stops_check_source_cleanly(tmp_path: Path) -> None:
    data, backups, env = setup_app(tmp_path, **{"GOFR_{P}_BACKUP_SPOT_CHECK_RATE": "0.1"})
    big = write(data / "storage" / "big.bin", os.urandom(4 << 20), mtime=T0)
    assert run_cli("now", env=env).returncode == 0
    before = state(backups).get("last_spot_check")
    p = popen_cli("check-source", "--sample", "100", env=env)
    deadline = time.monotonic() + 60
    while True:  # until it is reading the sample (4 MB at 0.1 MB/s: 40 s)
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline
        try:
            fds = [os.readlink(f"/proc/{p.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{p.pid}/fd")]
        except OSError:
            fds = []
        if any(x.endswith("/big.bin") or x.startswith(str(data)) and x.endswith(".txt") for x in fds):
            break
        time.sleep(0.05)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    took = time.monotonic() - t0
    assert p.returncode == 1 and "interrupted" in err and "Traceback" not in err, err
    assert took < 5, took
    assert state(backups).get("last_spot_check") == before  # nothing recorded
    assert big.exists()


def test_check_source_user_errors(tmp_path: Path) -> None:
    data, backups, env = setup_app(tmp_path)
    before = (backups / "manifest.json").read_bytes()
    r = run_cli("check-source", "--sample", "lots", env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--sample='lots'" in r.stderr
    r = run_cli("check-source", "--sample", "101", "--json", env=env)
    assert r.returncode == 2 and json.loads(r.stdout)["exit_code"] == 2
    r = run_cli("check-source", "gofr-plot_daily_20200101_000000.tar.gz", env=env)
    assert r.returncode == 2 and "archive not found" in r.stderr
    assert (backups / "manifest.json").read_bytes() == before
    assert "last_spot_check" not in state(backups)


def test_the_service_checks_the_source_after_each_scheduled_backup(tmp_path: Path) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    for i in range(10):
        write(data / "storage" / f"f{i}.txt", f"{i}" * 100, mtime=T0)
    env = {
        "GOFR_PROJECT": "plot",
        "GOFR_PLOT_BACKUP_DATA_DIR": str(data),
        "GOFR_PLOT_BACKUP_DIR": str(backups),
        "GOFR_PLOT_BACKUP_PATHS": "storage:storage",
        "GOFR_PLOT_BACKUP_SPOT_CHECK_SAMPLE": "100",
        "GOFR_PLOT_BACKUP_REPORT_FILE": "off",
    }
    t0 = datetime(2026, 5, 1, 1, 0, tzinfo=UTC)
    svc = BackupService(BackupConfig.from_env(env=env), clock=SimClock(t0, t0 + timedelta(hours=2)))  # type: ignore[arg-type]
    svc.start()
    es = json.loads((backups / "manifest.json").read_text())["backups"]
    assert [e["trigger"] for e in es] == ["catch-up", "schedule"]
    for e in es:
        assert e["spot_check"]["ok"] is True and e["spot_check"]["sampled"] == 10, e["spot_check"]
    # a manual backup is not checked (its caller is there to look)
    manual = cli_env(
        data,
        backups,
        **{"GOFR_{P}_BACKUP_PATHS": "storage:storage", "GOFR_{P}_BACKUP_RETENTION_DAYS": "9999"},
    )
    assert run_cli("now", env=manual).returncode == 0
    es = json.loads((backups / "manifest.json").read_text())["backups"]
    assert [("spot_check" in e) for e in es] == [True, True, False]


def test_a_source_that_is_gone_fails_the_check(tmp_path: Path) -> None:
    """An unmounted data volume: the walk finds nothing, which once read as 'nothing missing',
    passed, and cleared an earlier failed check."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    for i in range(3):
        write(data / "storage" / f"doc{i}.json", "{}", mtime=T0)
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})
    assert run_cli("now", env=env).returncode == 0
    assert run_cli("check-source", env=env).returncode == 0
    shutil.rmtree(data / "storage")
    r = run_cli("check-source", "--json", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    d = json.loads(r.stdout)
    assert d["ok"] is False and "storage" in d["error"] and "no such path" in d["error"], d
    assert run_cli("status", env=env).returncode == 1
