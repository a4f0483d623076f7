"""Prometheus metrics, parsed with prometheus_client's own text parser from the textfile, from the
service's HTTP listener and from `gofr-backup metrics`, and checked against the manifest and the
state file on disk."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from gofrtest import cli_env, manifest, popen_cli, run_cli, write
from prometheus_client.parser import text_string_to_metric_families

NAMES = {
    "gofr_backup_last_success_timestamp_seconds",
    "gofr_backup_last_attempt_timestamp_seconds",
    "gofr_backup_last_status",
    "gofr_backup_duration_seconds",
    "gofr_backup_archive_size_bytes",
    "gofr_backup_source_bytes",
    "gofr_backup_files",
    "gofr_backup_archives",
    "gofr_backup_verify_failures_total",
    "gofr_backup_unreadable_files",
    "gofr_backup_healthy",
}


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            assert s.labels["project"] == "plot", s
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "project"))
            out[(s.name, labels)] = s.value
    return out


def one(m: dict[Any, float], name: str, **labels: str) -> float:
    return m[(name, tuple(sorted(labels.items())))]


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def state(backups: Path) -> dict[str, Any]:
    return json.loads((backups / ".gofr-plot.state.json").read_text())


def check_against_disk(m: dict[Any, float], backups: Path) -> None:
    """Every value the metrics give, derived again here from manifest.json and the state file."""
    st, es = state(backups), manifest(backups)
    newest = max(es, key=lambda e: e["created"])
    assert {k[0] for k in m} >= NAMES
    assert one(m, "gofr_backup_last_success_timestamp_seconds") == ts(st["last_success"]["time"])
    assert one(m, "gofr_backup_last_attempt_timestamp_seconds") == ts(st["last_run"])
    for s in ("ok", "incomplete", "failed"):
        assert one(m, "gofr_backup_last_status", status=s) == (1.0 if st["last_result"] == s else 0.0)
    assert one(m, "gofr_backup_duration_seconds") == newest["duration_s"]
    assert one(m, "gofr_backup_archive_size_bytes") == newest["size_bytes"]
    assert one(m, "gofr_backup_source_bytes") == newest["source_bytes"]
    assert one(m, "gofr_backup_files") == newest["file_count"]
    for tier in ("daily", "weekly", "monthly"):
        assert one(m, "gofr_backup_archives", tier=tier) == sum(1 for e in es if e["tier"] == tier)
    assert one(m, "gofr_backup_verify_failures_total") == st.get("verify_failures_total", 0)
    assert one(m, "gofr_backup_unreadable_files") == (0 if newest["complete"] else 1)


def test_textfile_and_metrics_command_match_the_manifest_and_state(tmp_path: Path) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "a.bin", b"x" * 5000)
    env = cli_env(
        data,
        backups,
        **{"GOFR_{P}_BACKUP_PATHS": "storage:storage", "GOFR_{P}_BACKUP_METRICS_FILE": "gofr.prom"},
    )
    assert run_cli("now", env=env).returncode == 0
    write(data / "storage" / "b.bin", b"y" * 7000)
    assert run_cli("now", "--tier", "weekly", env=env).returncode == 0
    m = parse((backups / "gofr.prom").read_text())
    check_against_disk(m, backups)
    assert one(m, "gofr_backup_healthy") == 1.0
    assert one(m, "gofr_backup_archives", tier="weekly") == 1.0 and one(m, "gofr_backup_files") == 3.0
    assert not any(
        k[0].startswith("gofr_backup_remote") or "drill" in k[0] for k in m
    )  # not configured / none yet
    assert parse(run_cli("metrics", env=env).stdout) == m  # the same exposition on stdout

    # a failed run: the textfile says so at once; the last success stays
    shutil.rmtree(data / "storage")
    assert run_cli("now", env=env).returncode == 1
    m2 = parse((backups / "gofr.prom").read_text())
    check_against_disk(m2, backups)
    assert (
        one(m2, "gofr_backup_last_status", status="failed") == 1.0 and one(m2, "gofr_backup_healthy") == 0.0
    )
    assert one(m2, "gofr_backup_last_success_timestamp_seconds") == one(
        m, "gofr_backup_last_success_timestamp_seconds"
    )


def test_verify_failures_drills_and_remote(tmp_path: Path) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "a.bin", b"x" * 5000)
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})
    assert run_cli("now", env=env).returncode == 0
    [e] = manifest(backups)
    arc = backups / e["path"]
    arc.write_bytes(arc.read_bytes()[:-40])  # truncated: verification fails
    assert run_cli("verify", "--all", env=env).returncode == 1
    assert run_cli("verify", "--all", env=env).returncode == 1
    m = parse(run_cli("metrics", env=env).stdout)
    assert one(m, "gofr_backup_verify_failures_total") == 2.0 == state(backups)["verify_failures_total"]

    # restore drills (recorded by the drill feature in entries and the state) and the remote's lag
    doc = json.loads((backups / "manifest.json").read_text())
    doc["backups"][0]["drill"] = {"at": "2026-05-01T03:00:00+00:00", "ok": True, "restore_seconds": 12.5}
    (backups / "manifest.json").write_text(json.dumps(doc))
    st = state(backups)
    st["last_drill"] = {
        "at": "2026-05-02T03:00:00+00:00",
        "ok": False,
        "error": "boom",
        "restore_seconds": None,
    }
    st["remote_last_success"] = "2026-05-02T02:10:00+00:00"
    (backups / ".gofr-plot.state.json").write_text(json.dumps(st))
    env["GOFR_PLOT_BACKUP_REMOTE_URL"] = "s3://bucket/gofr"
    m = parse(run_cli("metrics", env=env).stdout)
    assert one(m, "gofr_backup_drill_last_success_timestamp_seconds") == ts("2026-05-01T03:00:00+00:00")
    assert one(m, "gofr_backup_drill_last_timestamp_seconds") == ts("2026-05-02T03:00:00+00:00")  # failed
    assert one(m, "gofr_backup_restore_seconds") == 12.5
    assert one(m, "gofr_backup_remote_last_success_timestamp_seconds") == ts("2026-05-02T02:10:00+00:00")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _service(tmp_path: Path, addr: str) -> tuple[subprocess.Popen[str], Path]:
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "a.bin", b"x" * 5000)
    env = cli_env(
        data,
        backups,
        **{
            "GOFR_{P}_BACKUP_PATHS": "storage:storage",
            "GOFR_{P}_BACKUP_METRICS_ADDR": addr,
            "GOFR_{P}_BACKUP_SCHEDULE": "0 3 1 1 *",
        },
    )
    return popen_cli("run", env=env), backups


def _stop(p: subprocess.Popen[str]) -> str:
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0
    return out


def test_http_listener_serves_what_is_on_disk(tmp_path: Path) -> None:
    port = _free_port()
    p, backups = _service(tmp_path, f"127.0.0.1:{port}")
    try:
        deadline, m = time.monotonic() + 60, {}
        while time.monotonic() < deadline:  # the service makes its first (catch-up) backup
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    m = parse(r.read().decode())
                if one(m, "gofr_backup_last_status", status="ok") == 1.0:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        check_against_disk(m, backups)
        assert one(m, "gofr_backup_archives", tier="daily") == 1.0
    finally:
        out = _stop(p)
    assert f"metrics on http://127.0.0.1:{port}/metrics" in out


def test_a_metrics_port_in_use_does_not_stop_the_backups(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    p, backups = _service(tmp_path, f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (backups / "manifest.json").exists():
            time.sleep(0.2)
        time.sleep(0.5)
        assert p.poll() is None  # still running
        assert len(manifest(backups)) == 1  # and it made its backup
        err = state(backups)["metrics_listener_last_error"]["error"]
        assert f"cannot listen on 127.0.0.1:{port} for metrics" in err and "METRICS_ADDR" in err
    finally:
        out = _stop(p)
        taken.close()
    assert "cannot listen on" in out


def test_an_unwritable_metrics_file_never_fails_a_backup(tmp_path: Path) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "a.bin", b"x")
    env = cli_env(
        data,
        backups,
        **{
            "GOFR_{P}_BACKUP_PATHS": "storage:storage",
            "GOFR_{P}_BACKUP_METRICS_FILE": "/nonexistent/dir/gofr.prom",
        },
    )
    r = run_cli("now", env=env)
    assert r.returncode == 0, r.stderr
    assert "cannot write the metrics file /nonexistent/dir/gofr.prom" in r.stderr
    assert state(backups)["metrics_last_error"]["error"].startswith("cannot write the metrics file")
