"""Restore trusts nothing it was not told: another project's archive, a --target that is the live
data, an incomplete archive restored in part, a newer archive passed over by --latest.

Every test here reproduced the defect on the code before its fix (named in each comment). Real
files, the CLI as a subprocess, nothing of ours mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gofrtest import cli_env, manifest, needs, run_cli, snapshot, without_dac, write


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


def test_a_target_inside_a_live_path_is_refused(tmp_path: Path) -> None:
    # `restore --latest --target $DATA/storage/copy --yes` wrote the "copy" into the live storage
    # path (and the next backup held it too), although --target is "a copy, live data untouched"
    data, backups, env = _plot(tmp_path)
    e = _now(env)
    link = tmp_path / "alias"
    os.symlink(data / "storage", link)
    before = _disk(tmp_path)
    for target, cwd in (
        (str(data / "storage" / "copy"), None),
        (str(data / "storage" / "deep" / "er"), None),
        (str(link / "copy"), None),  # through a link
        ("copy", data / "auth"),  # relative, run in the live path
    ):
        for extra in (["--yes"], ["--dry-run"], ["--yes", "--json"]):
            r = run_cli("restore", e["filename"], "--target", target, *extra, env=env, cwd=cwd)
            if "--json" in extra:
                assert json.loads(r.stdout)["exit_code"] == 2, r.stdout
            line = _one_line(r)
            assert "inside the live path" in line and "outside the data" in line, line
            live = "auth" if cwd else "storage"
            assert str(data / live) in line, line
            assert _disk(tmp_path) == before
    r = run_cli("restore", e["filename"], "--target", str(tmp_path / "copy"), "--yes", env=env)
    assert r.returncode == 0, r.stderr


# -- a --target that is the live data (or the backup dir) through a bind mount ---------------------------
@contextlib.contextmanager
def _bind(src: Path, dst: Path) -> Iterator[Path]:
    """``src`` mounted (bind) on ``dst``: the same directory under another name, which realpath()
    cannot relate to it."""
    needs(os.geteuid() == 0, "bind mounts need root")
    dst.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True, text=True)
    needs(r.returncode == 0, f"cannot bind-mount here: {r.stderr.strip()}")
    try:
        yield dst
    finally:
        subprocess.run(["umount", str(dst)], check=True)


def test_a_target_through_a_bind_mount_of_the_live_data_or_the_backups_is_refused(tmp_path: Path) -> None:
    # realpath() does not see through bind mounts: `restore --target <bind of DATA_DIR> --yes`
    # swapped the copy in over the live data, and a bind of the backup dir took the copy in
    data, backups, env = _plot(tmp_path)
    e = _now(env)
    write(data / "storage" / "new", "work since the backup")
    (data / "storage" / "doc").write_text("new")
    mnt = tmp_path / "mnt"
    cases: list[tuple[Path, Path, list[str], str]] = [
        (data, mnt / "data", ["--target", str(mnt / "data")], "is the live path storage"),
        (
            data / "storage",
            mnt / "one" / "storage",
            ["--target", str(mnt / "one"), "--only", "storage"],
            "is",
        ),
        (data / "storage", mnt / "st", ["--target", str(mnt / "st" / "copy")], "lies inside the live path"),
        (data / "storage", mnt / "st", ["--target", str(mnt / "st")], "is the live path storage"),
        (backups, mnt / "bk", ["--target", str(mnt / "bk")], "the backup directory or inside it"),
        (backups, mnt / "bk", ["--target", str(mnt / "bk" / "copy")], "the backup directory or inside it"),
    ]
    for src, dst, args, said in cases:
        with _bind(src, dst):
            before = _disk(tmp_path)
            for extra in (["--yes"], ["--dry-run"]):
                r = run_cli("restore", e["filename"], *args, *extra, env=env)
                line = _one_line(r)
                assert said in line, (args, line)
                assert _disk(tmp_path) == before, args
    assert (data / "storage" / "new").exists() and (data / "storage" / "doc").read_text() == "new"
    assert not {"storage", "auth", "copy"} & set(os.listdir(backups)), os.listdir(backups)
    # PATHS var:var/db: DIR/var, through a bind of the data dir, holds the live var/db
    write(data / "var" / "db" / "rows", "v1")
    venv = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "var:var/db"})
    v = _now(venv)
    (data / "var" / "db" / "rows").write_text("v2")
    with _bind(data, mnt / "data"):
        before = _disk(tmp_path)
        r = run_cli("restore", v["filename"], "--target", str(mnt / "data"), "--yes", env=venv)
        line = _one_line(r)
        assert "holds the live path var" in line, line
        assert _disk(tmp_path) == before
    assert (data / "var" / "db" / "rows").read_text() == "v2"
    # a copy beside the live data, reached through a bind mount of its parent, is fine
    (tmp_path / "copies").mkdir()
    with _bind(tmp_path / "copies", mnt / "copies"):
        r = run_cli("restore", e["filename"], "--target", str(mnt / "copies" / "c"), "--yes", env=env)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "copies" / "c" / "storage" / "doc").read_text() == "old"


def test_a_drill_dir_that_is_the_data_through_a_bind_mount_is_refused(tmp_path: Path) -> None:
    # DRILL_DIR was compared with the data after resolving symlinks only: a bind mount of the data
    # dir passed, and the drill made (and removed) its scratch dir in the live data
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "a", "a")
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "data:."})
    _now(env)
    for src, dst, drill_dir in (
        (data, tmp_path / "alias", tmp_path / "alias"),
        (data, tmp_path / "alias", tmp_path / "alias" / "sub"),
        (tmp_path, tmp_path / "up", tmp_path / "up"),  # its scratch dir is not in the data: fine
    ):
        with _bind(src, dst):
            (data / "sub").mkdir(exist_ok=True)
            before = _disk(tmp_path)
            r = run_cli("drill", env={**env, "GOFR_PLOT_BACKUP_DRILL_DIR": str(drill_dir)})
            if src == tmp_path:
                assert r.returncode == 0, r.stderr
                continue
            line = _one_line(r)
            assert "DRILL_DIR" in line and "overlaps the data directory" in line, line
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


def test_a_sealed_archive_verified_without_an_identity_says_what_was_checked(tmp_path: Path) -> None:
    # ENCRYPT_LOCAL: `verify` without an identity printed `OK ... (0 members)` having checked only
    # the checksum; after a manifest rebuild `restore --latest` said to run `verify --all`, which
    # cannot learn completeness without an identity
    import pyrage

    ident = pyrage.x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(str(ident) + "\n")
    data, backups, env = _plot(tmp_path)
    env = {
        **env,
        "GOFR_PLOT_BACKUP_ENCRYPT_RECIPIENTS": str(ident.to_public()),
        "GOFR_PLOT_BACKUP_ENCRYPT_LOCAL": "true",
    }
    e = _now(env)
    assert e["filename"].endswith(".age")
    (backups / "manifest.json").unlink()
    r = run_cli("verify", "--all", env=env)
    assert r.returncode == 0, r.stderr
    assert "0 members" not in r.stdout and "checksum only" in r.stdout and "--identity" in r.stdout, r.stdout
    d = json.loads(run_cli("verify", "--all", "--json", env=env).stdout)
    assert d["results"][0]["checksum_only"] is True, d
    r = run_cli("restore", "--latest", "--dry-run", env=env)
    assert r.returncode == 1 and "verify --all --identity" in r.stderr, r.stderr
    st = run_cli("status", env=env)
    assert "verify --all --identity" in st.stdout, st.stdout
    # with the identity: its contents are read, and it says how many members
    r = run_cli("verify", "--all", "--identity", str(key), env=env)
    assert r.returncode == 0 and "checksum only" not in r.stdout and "members" in r.stdout, r.stdout
    d = json.loads(run_cli("verify", "--all", "--identity", str(key), "--json", env=env).stdout)
    assert d["results"][0]["checksum_only"] is False, d
    r = run_cli("restore", "--latest", "--dry-run", "--identity", str(key), env=env)
    assert r.returncode == 0, r.stderr


def test_a_restore_that_finds_the_newest_archive_damaged_records_it_and_latest_moves_on(
    tmp_path: Path,
) -> None:
    """The newest archive rotted after it was verified. Its restore is refused (its own pass finds
    the checksum wrong), and that is recorded as `verify` would: the next `restore --latest` says
    it passes over it and restores the older one, and `status` no longer calls it restorable
    (before, every `--latest` picked it again and failed, and status stayed HEALTHY)."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "a", "v1\n")
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})
    assert run_cli("now", env=env).returncode == 0
    time.sleep(1.1)
    write(data / "storage" / "a", "v2\n")
    assert run_cli("now", env=env).returncode == 0
    older, newer = sorted((backups / "daily").glob("*.tar.gz"))
    raw = bytearray(newer.read_bytes())
    raw[len(raw) // 2] ^= 1
    newer.write_bytes(bytes(raw))
    r = run_cli("restore", "--latest", "--target", str(tmp_path / "c1"), "--yes", env=env)
    assert r.returncode == 1 and f"refusing to restore {newer.name}" in r.stderr, r.stderr
    entry = next(e for e in manifest(backups) if e["filename"] == newer.name)
    assert entry["verified"] is False and entry["verify_error"], entry
    r = run_cli("restore", "--latest", "--target", str(tmp_path / "c2"), "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert f"passing over the newer {newer.name}" in r.stderr and older.name in r.stderr, r.stderr
    assert (tmp_path / "c2" / "storage" / "a").read_text() == "v1\n"
    st = run_cli("status", "--json", env=env)
    assert json.loads(st.stdout)["restorable"]["filename"] == older.name, st.stdout
