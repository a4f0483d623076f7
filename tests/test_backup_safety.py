"""What a backup must save, and what it must never quietly leave out (issue 12, items 7-9)."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from gofrtest import cli_env, manifest, run_cli, write


def _now(env: dict[str, str]) -> dict[str, Any]:
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as t:
        return {m.name: m for m in t.getmembers()}


def _meta(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive) as t:
        f = t.extractfile(".gofr-backup.json")
        assert f is not None
        return json.loads(f.read())


# -- item 7: a PATHS entry that is itself a symlink --------------------------------------------------
def test_a_paths_entry_that_is_a_symlink_is_followed_and_recorded(tmp_path: Path) -> None:
    # issue 12 item 7: `ld:linkdir` with linkdir -> real archived only the link; real/ was never saved
    data = tmp_path / "data"
    write(data / "real" / "precious.txt", "the operator's data")
    write(data / "real" / "sub" / "more.bin", os.urandom(5000))
    os.symlink("precious.txt", data / "real" / "inner-link")  # a link inside the path stays a link
    os.symlink("real", data / "linkdir")
    write(data / "single.conf", "one file")
    os.symlink(str(data / "single.conf"), data / "conf-link")  # absolute, to a file
    env = cli_env(data, tmp_path / "backups", **{"GOFR_{P}_BACKUP_PATHS": "ld:linkdir,cf:conf-link"})
    e = _now(env)
    archive = tmp_path / "backups" / e["path"]
    m = _members(archive)
    assert m["ld"].isdir(), "the configured path is what its link points at"
    assert "ld/precious.txt" in m and "ld/sub/more.bin" in m
    assert m["ld/inner-link"].issym() and m["ld/inner-link"].linkname == "precious.txt"
    assert m["cf"].isreg() and m["cf"].size == len("one file")
    meta = _meta(archive)
    assert meta["followed"] == {"ld": str(data / "real"), "cf": str(data / "single.conf")}
    assert meta["kinds"] == {"ld": "dir", "cf": "file"}
    assert e["file_count"] == 6  # ld, precious.txt, inner-link, sub, sub/more.bin, and cf
    target = tmp_path / "copy"
    r = run_cli("restore", e["filename"], "--target", str(target), "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert (target / "ld" / "precious.txt").read_text() == "the operator's data"


def test_a_paths_link_to_root_or_into_the_backup_dir_fails_loudly(tmp_path: Path) -> None:
    # issue 12 item 7, hostile: following a top-level link must not archive `/` or the backups
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "f.txt", "x")
    os.symlink("/", data / "rootlink")
    backups.mkdir()
    os.symlink(str(backups), data / "backlink")
    for paths, why in (("s:storage,r:rootlink", "'/'"), ("s:storage,b:backlink", "backup directory")):
        env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": paths})
        r = run_cli("now", env=env)
        assert r.returncode == 1, r.stdout + r.stderr
        assert why in r.stderr and "symlink" in r.stderr and "Traceback" not in r.stderr
        assert not list(backups.glob("daily/*.tar*")), "nothing may be archived"
        st = run_cli("status", "--json", env=env)
        assert st.returncode == 1


def test_a_paths_link_loop_or_dangling_link_is_reported(tmp_path: Path) -> None:
    # issue 12 item 7, hostile: a loop cannot be followed (unreadable: incomplete), a dangling link
    # points at nothing (missing: skipped with a warning), like any path that does not exist
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "f.txt", "x")
    os.symlink("loop-b", data / "loop-a")
    os.symlink("loop-a", data / "loop-b")
    os.symlink("nowhere", data / "dangling")
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "s:storage,l:loop-a,d:dangling"})
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 3, r.stderr  # incomplete: the loop could not be followed
    e = json.loads(r.stdout)
    assert e["complete"] is False
    text = " ".join(e["warnings"])
    assert "loop-a" in text and "dangling" in text and "does not exist" in text


# -- item 8: the backup dir inside a backed-up path ----------------------------------------------------
def test_the_backup_dir_inside_a_backed_up_path_is_left_out_with_one_warning(tmp_path: Path) -> None:
    # issue 12 item 8: each archive contained the previous ones, so sizes doubled every run
    data = tmp_path / "data"
    write(data / "storage" / "blob.bin", os.urandom(300_000))
    backups = data / "storage" / "backups"
    env = cli_env(
        data,
        backups,
        **{"GOFR_{P}_BACKUP_PATHS": "storage:storage", "GOFR_{P}_BACKUP_COMPRESSION": "none"},
    )
    first = _now(env)
    # what a dead run leaves behind, inside the backup dir: a partial archive and the temp dir
    write(backups / "daily" / "gofr-plot_daily_20200101_000000.tar.partial", os.urandom(1000))
    write(backups / ".gofr-plot.tmp" / "snapshot-0.db", os.urandom(1000))
    second = _now(env)
    names = set(_members(backups / second["path"]))
    assert not [n for n in names if n.startswith("storage/backups")], names
    assert second["size_bytes"] < first["size_bytes"] * 1.2, "the second archive holds the first"
    warned = [w for w in second["warnings"] if "backup directory" in w]
    assert len(warned) == 1 and "storage/backups" in warned[0], second["warnings"]
    assert _meta(backups / second["path"])["left_out"] == {"storage": ["backups"]}


def test_the_backup_dir_as_a_backed_up_path_is_a_configuration_error(tmp_path: Path) -> None:
    # issue 12 item 8, hostile: a backup dir that IS the data dir, backed up as `data:.`
    data = tmp_path / "data"
    write(data / "f.txt", "x")
    env = cli_env(data, data, **{"GOFR_{P}_BACKUP_PATHS": "data:."})
    r = run_cli("now", env=env)
    assert r.returncode == 2 and "GOFR_PLOT_BACKUP_PATHS" in r.stderr and "backup directory" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(data)) == ["f.txt"], "nothing may be written"
    # ... while backing up other paths of the data dir into it is fine
    env = cli_env(data, data, **{"GOFR_{P}_BACKUP_PATHS": "f:f.txt"})
    assert run_cli("now", env=env).returncode == 0


# -- item 9: excludes that leave nothing ---------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["?*", "**/*", "[!.]*", "*/,*.*"])
def test_excludes_that_leave_no_file_of_a_path_fail_the_backup(tmp_path: Path, pattern: str) -> None:
    # issue 12 item 9: these gave a "successful" backup of empty directories
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "doc.json", "{}")
    write(data / "storage" / "sub" / "deep.txt", "x")
    write(data / "auth" / "tokens.json", "{}")
    env = cli_env(
        data, backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage", "GOFR_{P}_BACKUP_EXCLUDE": pattern}
    )
    r = run_cli("now", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "EXCLUDE" in r.stderr and "storage" in r.stderr and "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("gofr-backup:")]
    assert len(errors) == 1 and "EXCLUDE" in errors[0], r.stderr
    assert not list(backups.glob("daily/*")), "nothing may be written"
    st = json.loads(run_cli("status", "--json", env=env).stdout)
    assert not st["healthy"] and "EXCLUDE" in st["last_failure"]["error"]


def test_excludes_that_leave_some_files_or_meet_an_empty_path_are_fine(tmp_path: Path) -> None:
    # issue 12 item 9: the check must not refuse what is legitimately small
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "doc.json", "{}")
    write(data / "storage" / "cache" / "c.tmp", "x")
    (data / "empty").mkdir()
    env = cli_env(
        data,
        backups,
        **{"GOFR_{P}_BACKUP_PATHS": "storage:storage,e:empty", "GOFR_{P}_BACKUP_EXCLUDE": "cache/,*.tmp"},
    )
    e = _now(env)
    assert "storage/doc.json" in _members(backups / e["path"])
    assert manifest(backups)[0]["complete"] is True
