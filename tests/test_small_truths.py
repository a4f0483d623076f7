"""What the commands print says what happened, in plain words (issue 13, "smaller truths")."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

from gofrtest import cli_env, manifest, run_cli, write


def _env(tmp: Path, **extra: str) -> tuple[Path, Path, dict[str, str]]:
    data, backups = tmp / "data", tmp / "backups"
    write(data / "s" / "a.txt", "a")
    return data, backups, cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "s:s,gone:gone", **extra})


def test_list_and_status_show_the_warnings_themselves(tmp_path: Path) -> None:
    # issue 13: list showed only a count of warnings, status said "see last_warnings"
    _, _, env = _env(tmp_path)
    assert run_cli("now", env=env).returncode == 0
    lst = run_cli("list", env=env).stdout
    assert "warning: path gone=" in lst and "does not exist" in lst, lst
    st = run_cli("status", env=env).stdout
    assert "last warnings:" in st and "warning: path gone=" in st, st
    assert "see last_warnings" not in st


def test_config_prints_the_umask_in_octal(tmp_path: Path) -> None:
    # issue 13: `config` printed the umask as a decimal number (23 for 0027)
    _, _, env = _env(tmp_path, **{"GOFR_{P}_BACKUP_UMASK": "0077"})
    assert "umask = 0077" in run_cli("config", env=env).stdout
    assert json.loads(run_cli("config", "--json", env=env).stdout)["umask"] == "0077"


def test_json_log_key_is_filename(tmp_path: Path) -> None:
    # issue 13: the log key `filename` came out as `filename_`
    _, _, env = _env(tmp_path, GOFR_BACKUP_LOG_FORMAT="json")
    r = run_cli("now", env=env)
    events = [json.loads(line) for line in r.stderr.splitlines()]
    verified = next(e for e in events if e["event"] == "backup.verified")
    assert verified["filename"].startswith("gofr-plot_daily_") and "filename_" not in verified


def test_untracked_header_once_and_prune_in_plain_english(tmp_path: Path) -> None:
    # issue 13: the UNTRACKED header was printed once per file; prune said "3 archive(s) would delete"
    _, backups, env = _env(tmp_path)
    for _ in range(3):
        assert run_cli("now", env=env).returncode == 0
    doc = json.loads((backups / "manifest.json").read_text())
    forgotten = [e["path"] for e in doc["backups"][:2]]  # two archives the manifest forgets: untracked
    (backups / "manifest.json").write_text(json.dumps({**doc, "backups": doc["backups"][2:]}))
    lst = run_cli("list", env=env).stdout
    assert lst.count("UNTRACKED") == 1 and all(p in lst for p in forgotten), lst
    dry = run_cli("prune", "--dry-run", env={**env, "GOFR_PLOT_BACKUP_MAX_COUNT": "1"}).stdout
    assert "archive(s)" not in dry and "2 archives would be deleted and 1 kept" in dry, dry
    assert "would adopt untracked archive" in dry and "\nadopted" not in dry, dry
    assert len(manifest(backups)) == 1  # a dry run changed nothing


def test_boolean_error_lists_every_accepted_spelling(tmp_path: Path) -> None:
    # issue 13: the boolean error named true/false, 1/0 and yes/no, but y/n and on/off work too
    _, _, env = _env(tmp_path, **{"GOFR_{P}_BACKUP_ENABLE_WEEKLY": "maybe"})
    r = run_cli("config", env=env)
    assert r.returncode == 2
    for spelling in ("true/false", "1/0", "yes/no", "y/n", "on/off"):
        assert spelling in r.stderr, r.stderr


def test_a_name_that_is_not_utf8_in_a_warning_never_breaks_a_backup_or_its_json(tmp_path: Path) -> None:
    """A symlink pointing outside its path whose name is not valid UTF-8: the backup warns about
    it. Writing that warning into the end marker raised UnicodeEncodeError, and the backup failed
    ("unexpected error"); `list --json` must stay valid JSON, text output one escaped line."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "doc.txt", "x")
    os.symlink("/etc/hostname", os.fsencode(data / "storage") + b"/link-\xff")
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})
    r = run_cli("now", env=env)
    assert r.returncode == 0, r.stderr
    assert "link-\\udcff" in r.stdout + r.stderr  # the name, escaped, in the warning
    e = manifest(backups)[0]
    assert any("link-\udcff" in w for w in e["warnings"]), e["warnings"]
    for args in (("list", "--json"), ("status", "--json"), ("verify", "--all", "--json")):
        r = run_cli(*args, env=env)
        assert r.returncode == 0, (args, r.stderr)
        json.loads(r.stdout)
    for args in (("list",), ("status",)):
        r = run_cli(*args, env=env)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stderr)
    with tarfile.open(backups / e["path"]) as tar:
        end = json.loads(tar.extractfile(".gofr-backup-end.json").read())  # type: ignore[union-attr]
    assert any("link-\udcff" in w for w in end["warnings"])
