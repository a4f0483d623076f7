"""Restore trusts nothing it was not told: another project's archive, a --target that is the live
data, an incomplete archive restored in part, a newer archive passed over by --latest.

Every test here reproduced the defect on the code before its fix (named in each comment). Real
files, the CLI as a subprocess, nothing of ours mocked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from gofrtest import cli_env, needs, run_cli, snapshot, without_dac, write


def _one_line(r: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gofr-backup: "), r.stderr
    return lines[0]


def _disk(tmp: Path) -> dict[str, Any]:
    """Everything under tmp but the project's run lock (made by the first restore that takes it)."""
    snap = snapshot(tmp)
    snap.pop("backups/.gofr-plot.lock", None)
    snap.pop("backups", None)  # its mtime: the lock file
    return snap


def _now(env: dict[str, str]) -> dict[str, Any]:
    r = run_cli("now", "--json", env=env)
    assert r.returncode in (0, 3), r.stderr
    return json.loads(r.stdout)


def _plot(tmp: Path, paths: str = "storage:storage,auth:auth") -> tuple[Path, Path, dict[str, str]]:
    data, backups = tmp / "data", tmp / "backups"
    write(data / "storage" / "doc", "old")
    write(data / "auth" / "k", "key")
    return data, backups, cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": paths})


# -- another project's archive ---------------------------------------------------------------------
def test_another_projects_archive_is_never_restored_over_this_projects_data(tmp_path: Path) -> None:
    # with GOFR_PROJECT=plot, `restore gofr-doc_daily_... --yes` (the shared backup dir) replaced
    # plot's live data with doc's, without a word
    data, backups, env = _plot(tmp_path)
    write(data / "storage" / "plot.txt", "plot's own data")
    docdata = tmp_path / "docdata"
    write(docdata / "storage" / "doc.txt", "doc data")
    write(docdata / "auth" / "k", "doc key")
    denv = cli_env(docdata, backups, project="doc", **{"GOFR_{P}_BACKUP_PATHS": "storage:storage,auth:auth"})
    doc = _now(denv)
    assert doc["filename"].startswith("gofr-doc_")
    before = _disk(tmp_path)
    for name in (doc["filename"], str(backups / doc["path"])):
        for extra in (["--yes"], ["--dry-run"], ["--yes", "--json"]):
            r = run_cli("restore", name, *extra, env=env)
            line = _one_line(r)
            assert "doc" in line and "plot" in line and "--target" in line, line
            assert "GOFR_PROJECT=doc" in line, line
            assert _disk(tmp_path) == before
    # looking at it is allowed, and it says whose archive it is
    copy = tmp_path / "copy"
    r = run_cli("restore", doc["filename"], "--target", str(copy), "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert "project doc" in r.stderr, r.stderr
    assert (copy / "storage" / "doc.txt").read_text() == "doc data"
    assert (data / "storage" / "plot.txt").read_text() == "plot's own data"
    # doc restores its own archive as before
    write(docdata / "storage" / "doc.txt", "changed")
    assert run_cli("restore", doc["filename"], "--yes", env=denv).returncode == 0
    assert (docdata / "storage" / "doc.txt").read_text() == "doc data"


# -- a --target that is the live data -----------------------------------------------------------------
def test_a_target_that_is_the_live_data_is_refused(tmp_path: Path) -> None:
    # `cd /data && restore --latest --target . --yes` (or --target $DATA_DIR) replaced the live
    # paths, although --target is "a copy, live data untouched"
    data, backups, env = _plot(tmp_path)
    e = _now(env)
    write(data / "storage" / "new", "work since the backup")
    (data / "storage" / "doc").write_text("new")
    before = _disk(tmp_path)
    link = tmp_path / "link-to-data"
    os.symlink(data, link)
    before = _disk(tmp_path)
    for target, cwd in ((".", data), (str(data), None), (str(link), None), ("..", data / "auth")):
        for extra in (["--yes"], ["--dry-run"]):
            r = run_cli("restore", e["filename"], "--target", target, *extra, env=env, cwd=cwd)
            line = _one_line(r)
            assert "--target" in line and "live" in line, line
            assert _disk(tmp_path) == before
    # a copy inside the backup dir is refused too
    r = run_cli("restore", e["filename"], "--target", str(backups), "--yes", env=env)
    _one_line(r)
    assert _disk(tmp_path) == before
    # a copy beside the live data is fine
    r = run_cli("restore", e["filename"], "--target", str(tmp_path / "copy"), "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert (data / "storage" / "new").exists() and (
        tmp_path / "copy" / "storage" / "doc"
    ).read_text() == "old"


def test_a_target_that_holds_a_live_path_is_refused(tmp_path: Path) -> None:
    # PATHS var:var/db: `--target DATA_DIR` would restore DATA_DIR/var, which holds the live var/db
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "var" / "db" / "rows", "v1")
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "var:var/db"})
    e = _now(env)
    (data / "var" / "db" / "rows").write_text("v2")
    before = _disk(tmp_path)
    r = run_cli("restore", e["filename"], "--target", str(data), "--yes", env=env)
    line = _one_line(r)
    assert "live" in line and str(data / "var" / "db") in line, line
    assert _disk(tmp_path) == before


# -- an incomplete archive, restored in part ---------------------------------------------------------
def test_only_counts_the_unreadable_paths_of_the_selected_names(tmp_path: Path) -> None:
    # `restore NAME --only auth` of an archive that could not read storage/locked/sub was refused as
    # incomplete, for a path under storage/ that it was not going to restore
    needs(os.geteuid() == 0 and bool(shutil.which("setpriv")), "root and setpriv (unreadable files)")
    data, backups, env = _plot(tmp_path)
    locked = write(data / "storage" / "locked" / "sub" / "s", "secret").parent
    os.chown(locked, 65534, 65534)
    os.chmod(locked, 0o700)
    r = subprocess.run(without_dac("now", "--json"), env=env, capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    e = json.loads(r.stdout)
    assert e["complete"] is False
    (data / "auth" / "k").write_text("changed key")
    write(data / "auth" / "new", "not in the backup")
    write(data / "storage" / "new", "live work")
    before = _disk(tmp_path)
    dry = run_cli("restore", e["filename"], "--only", "auth", "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["incomplete"] is False and [t["name"] for t in plan["targets"]] == ["auth"]
    assert _disk(tmp_path) == before
    # what it could not read is under storage/: still refused there, and for the whole archive
    for only in (["--only", "storage"], ["--only", "auth,storage"], []):
        line = _one_line(run_cli("restore", e["filename"], *only, "--yes", env=env))
        assert "incomplete" in line and "storage/locked/sub" in line, line
    assert _disk(tmp_path) == before
    r = run_cli("restore", e["filename"], "--only", "auth", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert (data / "auth" / "k").read_text() == "key" and not (data / "auth" / "new").exists()
    assert (data / "storage" / "new").read_text() == "live work"  # not restored, not touched


# -- --latest passing over a newer archive ----------------------------------------------------------
def test_latest_says_which_newer_archives_it_passes_over_and_why(tmp_path: Path) -> None:
    # when the newest archive failed its restore drill, `restore --latest` silently restored an
    # older one: neither the output nor --dry-run (nor the menu) said a newer archive was passed over
    data, backups, env = _plot(tmp_path)
    write(data / "storage" / "orders", "monday")
    older = _now(env)
    time.sleep(1.1)
    write(data / "storage" / "orders", "tuesday")
    newer = _now(env)
    env_probe = {**env, "GOFR_PLOT_BACKUP_DRILL_COMMAND": "echo broken probe; exit 7"}
    assert run_cli("drill", newer["filename"], env=env_probe).returncode == 1
    write(data / "storage" / "orders", "lost")

    def said(r: subprocess.CompletedProcess[str]) -> None:
        lines = [ln for ln in r.stderr.splitlines() if "passing over" in ln]
        assert len(lines) == 1, r.stderr
        assert newer["filename"] in lines[0] and "restore drill failed" in lines[0], lines
        assert "exited with status 7" in lines[0] and older["filename"] in lines[0], lines

    dry = run_cli("restore", "--latest", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    said(dry)
    j = run_cli("restore", "--latest", "--dry-run", "--json", env=env)
    plan = json.loads(j.stdout)
    assert plan["archive"] == older["filename"]
    [p] = plan["passed_over"]
    assert p["filename"] == newer["filename"] and "restore drill failed" in p["reason"]
    menu = run_cli("restore", "--interactive", "--dry-run", env=env, input="\n")
    assert menu.returncode == 0, menu.stderr
    said(menu)
    r = run_cli("restore", "--latest", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    said(r)
    assert (data / "storage" / "orders").read_text() == "monday"
    # by name, nothing is passed over and nothing said
    r = run_cli("restore", newer["filename"], "--dry-run", env=env)
    assert r.returncode == 0 and "passing over" not in r.stderr
