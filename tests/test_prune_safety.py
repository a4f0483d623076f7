"""Prune treats the manifest as untrusted input (issue 12, item 10): it deletes only this project's
archives, by name, as regular files inside the backup dir, and never through a symlink."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from gofrtest import Evidence, cli_env, reliability, run_cli, write

OLD = "2020-01-01T02:00:00+00:00"


def _entry(path: str, filename: str, tier: str = "daily", **kw: Any) -> dict[str, Any]:
    return {
        "project": "plot",
        "filename": filename,
        "path": path,
        "tier": tier,
        "created": OLD,
        "size_bytes": 10,
        "sha256": "0" * 64,
        "verified": False,
        "verify_error": "checksum mismatch (hostile entry)",
        "complete": True,
        "trigger": "manual",
        **kw,
    }


def _two_backups(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "f.txt", "x")
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})
    for _ in range(2):
        assert run_cli("now", env=env).returncode == 0
    return backups, env


@reliability(
    "Hostile manifest entries",
    "prune deletes only this project's archives as regular files in their tier dirs, never through "
    "a symlink; absolute and .. paths, other projects, symlinks, duplicates are skipped and reported",
)
def test_prune_never_deletes_what_a_hostile_manifest_names(tmp_path: Path, evidence: Evidence) -> None:
    # issue 12 item 10: prune deleted any file the manifest named ("/etc/x", "../canary.tar.gz")
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "f.txt", "x")
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0, r.stderr
    good = json.loads(r.stdout)
    canaries = {
        "abs": write(tmp_path / "etc" / "x", "system file"),
        "dotdot": write(tmp_path / "canary.tar.gz", "not ours"),
        "sidecar": write(tmp_path / "missing-canary.sha256", "not ours either"),
        "via-link": write(tmp_path / "canary2.tar.gz", "reached through a symlink"),
        "other-project": write(backups / "daily" / "gofr-other_daily_20200101_000000.tar.gz", "other"),
        "linked-tier": write(tmp_path / "elsewhere" / "gofr-plot_weekly_20200101_000000.tar.gz", "w"),
        "linked-tier-sidecar": write(
            tmp_path / "elsewhere" / "gofr-plot_weekly_20200101_000000.tar.gz.sha256", "w"
        ),
    }
    link = backups / "daily" / "gofr-plot_daily_20200102_000000.tar.gz"
    os.symlink(canaries["via-link"], link)
    os.symlink(tmp_path / "elsewhere", backups / "weekly")
    doc = json.loads((backups / "manifest.json").read_text())
    doc["backups"] += [
        _entry(str(canaries["abs"]), "x"),
        _entry("../canary.tar.gz", "canary.tar.gz"),
        _entry("daily/../../canary.tar.gz", "gofr-plot_daily_20200103_000000.tar.gz"),
        _entry("../missing-canary", "missing-canary"),  # "missing": its ".sha256" was removed
        _entry("daily/gofr-other_daily_20200101_000000.tar.gz", "gofr-other_daily_20200101_000000.tar.gz"),
        _entry("daily/" + link.name, link.name),
        _entry(
            "weekly/gofr-plot_weekly_20200101_000000.tar.gz",
            "gofr-plot_weekly_20200101_000000.tar.gz",
            "weekly",
        ),
        # a malformed field must not crash housekeeping
        _entry(
            "daily/gofr-plot_daily_20200104_000000.tar.gz",
            "gofr-plot_daily_20200104_000000.tar.gz",
            size_bytes="lots",
        ),
        # the good archive named twice, once as failed: a duplicate must not get it deleted
        {
            **good,
            "verified": False,
            "verify_error": "checksum mismatch (hostile duplicate)",
            "verified_at": "2099-01-01T00:00:00+00:00",
        },
    ]
    (backups / "manifest.json").write_text(json.dumps(doc))

    def intact() -> None:
        """One trial per hostile entry and per run: is what it names still there?"""
        for what, p in canaries.items():
            evidence.count(p.exists(), f"{what}: {p} was deleted")
        evidence.count(os.path.islink(link), "the symlink was deleted, not reported")
        evidence.count((backups / good["path"]).is_file(), "the good archive was deleted")

    p = run_cli("prune", "--json", env=env)
    assert p.returncode == 0, p.stderr
    intact()
    rep = json.loads(p.stdout)
    skipped = " ".join(rep["skipped"])
    for needle in (
        str(canaries["abs"]),
        "../canary.tar.gz",
        "daily/../../canary.tar.gz",
        "../missing-canary",
        "gofr-other_daily",
        link.name,
        "weekly",
    ):
        assert needle in skipped, (needle, rep["skipped"])
    assert not [d for d in rep["deleted"] if d["path"] == good["path"]]
    # the cleanup after `now` is the same prune
    r = run_cli("now", env=env)
    assert r.returncode == 0, r.stderr
    intact()
    text = run_cli("prune", env=env)
    assert text.returncode == 0 and "skipped" in text.stdout
    evidence.publish("prune, then now (whose cleanup is the same prune); each checks every canary")


def test_prune_deletes_nothing_through_a_symlinked_tier_dir_even_when_it_is_ours(tmp_path: Path) -> None:
    # issue 12 item 10: "never follow a symlink when deleting" covers the tier directory too
    backups, env = _two_backups(tmp_path)
    env["GOFR_PLOT_BACKUP_MAX_COUNT"] = "1"  # now one of the two is beyond the limit
    shutil.move(backups / "daily", tmp_path / "real-daily")
    os.symlink(tmp_path / "real-daily", backups / "daily")
    before = sorted(os.listdir(tmp_path / "real-daily"))
    p = run_cli("prune", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path / "real-daily")) == before
    assert any("symlink" in s for s in json.loads(p.stdout)["skipped"])
    # nor is anything written through it (prune could never remove it again)
    r = run_cli("now", env=env)
    assert r.returncode == 1 and "symlink" in r.stderr and "Traceback" not in r.stderr
    assert sorted(os.listdir(tmp_path / "real-daily")) == before


def test_an_adopted_archive_that_retention_deletes_leaves_no_entry(tmp_path: Path) -> None:
    # an archive the manifest did not know (a kill between rename and manifest update) is adopted;
    # if retention then deletes it, its adopted entry must go with it (found by the SIGKILL trials)
    backups, env = _two_backups(tmp_path)
    doc = json.loads((backups / "manifest.json").read_text())
    doc["backups"] = doc["backups"][1:]  # forget the older one
    (backups / "manifest.json").write_text(json.dumps(doc))
    p = run_cli("prune", "--json", env={**env, "GOFR_PLOT_BACKUP_MAX_COUNT": "1"})
    rep = json.loads(p.stdout)
    assert len(rep["adopted"]) == 1 and [d["path"] for d in rep["deleted"]] == rep["adopted"]
    for e in json.loads((backups / "manifest.json").read_text())["backups"]:
        assert (backups / e["path"]).is_file(), f"manifest entry without archive: {e['path']}"


def test_a_manifest_entry_with_a_time_without_offset_is_rebuilt_from_its_archive(tmp_path: Path) -> None:
    # hostile or hand-edited: a naive time cannot be compared with the others (list crashed); that
    # entry is rebuilt from its archive when the manifest is read (issue 13), never accepted half-way
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "f.txt", "x")
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})
    assert run_cli("now", env=env).returncode == 0
    doc = json.loads((backups / "manifest.json").read_text())
    doc["backups"].append({**doc["backups"][0], "created": "2020-01-04T00:00:00"})
    (backups / "manifest.json").write_text(json.dumps(doc))
    for cmd in ("list", "prune", "status"):
        r = run_cli(cmd, env=env)
        assert "Traceback" not in r.stderr, (cmd, r.stderr)
    entries = json.loads((backups / "manifest.json").read_text())["backups"]
    assert entries and all(datetime.fromisoformat(e["created"]).utcoffset() is not None for e in entries)
    assert len(list(backups.glob("daily/*.tar.gz"))) == 1


def test_prune_reports_a_leftover_it_does_not_delete_only_as_skipped(tmp_path: Path) -> None:
    """A symlinked `.partial` and a directory named `*.partial` are not ours to delete: they were
    listed under both "cleaned" and "skipped"; only what happened may be said."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "f.txt", "x")
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})
    assert run_cli("now", env=env).returncode == 0
    victim = write(tmp_path / "victim", "precious\n")
    link = "gofr-plot_daily_20260101_000001.tar.gz.partial"
    folder = "gofr-plot_daily_20260101_000002.tar.gz.partial"
    (backups / "daily" / link).symlink_to(victim)
    (backups / "daily" / folder).mkdir()
    real = "gofr-plot_daily_20260101_000003.tar.gz.partial"  # a real leftover is still cleaned
    write(backups / "daily" / real, b"\0" * 10)
    for args in (("prune", "--dry-run", "--json"), ("prune", "--json")):
        r = run_cli(*args, env=env)
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        for name in (link, folder):
            assert any(name in s for s in d["skipped"]), (args, d)
            assert not any(name in c for c in d["cleaned"]), (args, d)
        assert any(real in c for c in d["cleaned"]), (args, d)
    assert not (backups / "daily" / real).exists()
    r = run_cli("prune", env=env)
    cleaned = r.stdout.split("skipped")[0]
    assert link not in cleaned and folder not in cleaned and link in r.stdout, r.stdout
    assert victim.read_text() == "precious\n" and (backups / "daily" / folder).is_dir()
