"""What the manifest and the state file say is checked, never taken on trust.

- An entry rebuilt from its archive (manifest lost, or an archive adopted after a crash) does not
  know whether the backup was complete (``complete: null``): that is never read as "complete" by
  retention, ``status`` or ``restore --latest``, and a verification reads the archive's end marker
  and records it.
- ``status`` says why the last success is not restorable, truthfully.
- A wrongly typed field in the manifest or the state file is damaged input: reported in one line,
  never a crash, never "healthy".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gofrtest import cli_env, manifest, run_cli, write


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    data = tmp_path / "data"
    write(data / "storage" / "f.txt", "v1")
    (data / "real").mkdir()
    write(data / "real" / "k.txt", "the key")
    os.symlink("real", data / "link")
    return cli_env(data, tmp_path / "backups", **{"GOFR_{P}_BACKUP_PATHS": "storage:storage,l:link", **extra})


def _complete_then_incomplete(tmp_path: Path, env: dict[str, str]) -> tuple[str, str]:
    """A complete backup, then an incomplete one (its path ``l`` became a link loop, which the
    backup cannot follow): the names of both."""
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0, r.stderr
    complete = json.loads(r.stdout)["filename"]
    data = tmp_path / "data"
    os.unlink(data / "link")
    os.symlink("loop", data / "link")
    os.symlink("link", data / "loop")
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 3, r.stderr
    incomplete = json.loads(r.stdout)
    assert incomplete["complete"] is False and incomplete["verified"] is True
    return complete, incomplete["filename"]


def _on_disk(backups: Path) -> set[str]:
    return {p.name for p in (backups / "daily").glob("*.tar.gz")}


def _by_name(backups: Path) -> dict[str, dict[str, Any]]:
    return {e["filename"]: e for e in manifest(backups)}


def _status(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    r = run_cli("status", "--json", env=env)
    assert "Traceback" not in r.stderr and "unexpected error" not in r.stderr, r.stderr
    return r.returncode, json.loads(r.stdout)


# -- issue 3: a rebuilt entry of an incomplete archive cost the only complete one -----------------------
def test_prune_after_a_rebuild_keeps_the_only_complete_archive(tmp_path: Path) -> None:
    # prune with MAX_COUNT=1 right after the manifest was rebuilt: completeness is unknown for both,
    # and the complete one was deleted for the newer (incomplete) one
    env = _env(tmp_path, **{"GOFR_{P}_BACKUP_MAX_COUNT": "1"})
    backups = tmp_path / "backups"
    complete, incomplete = _complete_then_incomplete(tmp_path, env)
    assert _on_disk(backups) == {complete, incomplete}
    (backups / "manifest.json").unlink()
    r = run_cli("prune", env=env)
    assert r.returncode == 0, r.stderr
    assert complete in _on_disk(backups), r.stdout


def test_verify_records_completeness_and_prune_keeps_the_complete_archive(tmp_path: Path) -> None:
    # the breaker's r04: manifest lost, `verify --all`, then prune with MAX_COUNT=1 deleted the only
    # complete archive (the rebuilt entries said complete: null and verify never filled it in)
    env = _env(tmp_path, **{"GOFR_{P}_BACKUP_MAX_COUNT": "1"})
    backups = tmp_path / "backups"
    complete, incomplete = _complete_then_incomplete(tmp_path, env)
    (backups / "manifest.json").unlink()
    r = run_cli("verify", "--all", env=env)
    assert r.returncode == 0, r.stderr
    es = _by_name(backups)
    assert es[complete]["complete"] is True and es[incomplete]["complete"] is False, es
    # the end marker's warnings name what could not be read, as the backup itself records them
    assert any("could not be read" in w for w in es[incomplete]["warnings"]), es[incomplete]
    r = run_cli("prune", env=env)
    assert r.returncode == 0, r.stderr
    assert _on_disk(backups) == {complete, incomplete}, r.stdout  # both protected: two slots
    dry = run_cli("restore", "--latest", "--dry-run", "--json", "--target", str(tmp_path / "copy"), env=env)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["archive"] == complete


# -- issue 9: after a rebuild, restore --latest never worked and status named an unknown archive ----------
def test_after_a_rebuild_verify_all_makes_restore_latest_work(tmp_path: Path) -> None:
    env = _env(tmp_path)
    backups = tmp_path / "backups"
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0, r.stderr
    name = json.loads(r.stdout)["filename"]
    (backups / "manifest.json").unlink()
    # before a verification: refused, saying what to run
    r = run_cli("restore", "--latest", "--dry-run", env=env)
    assert r.returncode == 1
    assert "completeness unknown: run `gofr-backup verify --all`" in r.stderr, r.stderr
    assert len([x for x in r.stderr.splitlines() if x.startswith("gofr-backup:")]) == 1, r.stderr
    code, doc = _status(env)
    assert code == 1 and doc["restorable"] is None, doc
    assert any("completeness unknown: run `gofr-backup verify --all`" in x for x in doc["reasons"]), doc
    # the verification the message recommends records what the archive's end marker says
    assert run_cli("verify", "--all", env=env).returncode == 0
    assert _by_name(backups)[name]["complete"] is True
    r = run_cli("restore", "--latest", "--dry-run", "--target", str(tmp_path / "copy"), env=env)
    assert r.returncode == 0, r.stderr
    code, doc = _status(env)
    assert code == 0 and doc["restorable"]["filename"] == name, doc


def test_status_never_calls_an_entry_of_unknown_completeness_restorable(tmp_path: Path) -> None:
    # a manifest verified by an older version: verified, but complete still null
    env = _env(tmp_path)
    backups = tmp_path / "backups"
    assert run_cli("now", env=env).returncode == 0
    doc = json.loads((backups / "manifest.json").read_text())
    doc["backups"][0]["complete"] = None
    (backups / "manifest.json").write_text(json.dumps(doc))
    code, st = _status(env)
    assert code == 1 and st["restorable"] is None, st
    assert any("completeness unknown: run `gofr-backup verify --all`" in x for x in st["reasons"]), st
    assert not any("is gone" in x for x in st["reasons"]), st


# -- issue 12: "the last success is gone" while it was on disk --------------------------------------------
def test_status_says_the_manifest_is_unreadable_not_that_the_archive_is_gone(tmp_path: Path) -> None:
    env = _env(tmp_path)
    backups = tmp_path / "backups"
    assert run_cli("now", env=env).returncode == 0
    m = backups / "manifest.json"
    m.write_bytes(m.read_bytes()[:200])  # truncated
    code, st = _status(env)
    assert code == 1, st
    text = " | ".join(st["reasons"])
    assert "is gone" not in text, text
    assert "manifest" in text and "unreadable" in text, text
    assert m.read_bytes() == m.read_bytes()[:200]  # status writes nothing


def test_status_says_the_last_success_failed_verification_not_that_it_is_gone(tmp_path: Path) -> None:
    env = _env(tmp_path)
    backups = tmp_path / "backups"
    r = run_cli("now", "--json", env=env)
    a = backups / json.loads(r.stdout)["path"]
    with open(a, "r+b") as f:  # a bit flip in the middle of the stream
        f.seek(a.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    assert run_cli("verify", a.name, env=env).returncode == 1
    code, st = _status(env)
    assert code == 1, st
    text = " | ".join(st["reasons"])
    assert "is gone" not in text, text
    assert f"the last success, {a.name}, is on disk but failed verification" in text, text


# -- issue 13: wrongly typed fields crashed list, status and metrics ----------------------------------------
def _edit(p: Path, fn: Any) -> None:
    d = json.loads(p.read_text())
    fn(d)
    p.write_text(json.dumps(d))


def test_a_wrongly_typed_manifest_field_is_reported_not_a_crash(tmp_path: Path) -> None:
    env = _env(tmp_path)
    backups = tmp_path / "backups"
    r = run_cli("now", "--json", env=env)
    name = json.loads(r.stdout)["filename"]
    _edit(backups / "manifest.json", lambda d: d["backups"][0].update(size_bytes="big"))
    before = (backups / "manifest.json").read_bytes()
    for cmd in (["list"], ["list", "--json"], ["status"], ["metrics"], ["report"]):
        r = run_cli(*cmd, env=env)
        assert r.returncode in (0, 1), (cmd, r.stderr)
        assert "unexpected error" not in r.stderr and "Traceback" not in r.stderr, (cmd, r.stderr)
        lines = [x for x in r.stderr.splitlines() if "size_bytes" in x]
        assert len(lines) == 1 and "'big'" in lines[0] and "rebuilt from its archive" in lines[0], r.stderr
    assert (backups / "manifest.json").read_bytes() == before  # list and status write nothing
    r = run_cli("list", "--json", env=env)
    e = json.loads(r.stdout)["backups"][0]
    assert e["filename"] == name and e["size_bytes"] == (backups / e["path"]).stat().st_size
    # a writer keeps the rebuilt entry; it is verified again like any rebuilt one
    assert run_cli("verify", "--all", env=env).returncode == 0
    assert _by_name(backups)[name]["size_bytes"] == (backups / e["path"]).stat().st_size


def test_a_wrongly_typed_state_field_is_a_damaged_state_never_healthy(tmp_path: Path) -> None:
    env = _env(tmp_path)
    backups = tmp_path / "backups"
    assert run_cli("now", env=env).returncode == 0
    assert _status(env)[0] == 0
    state = backups / ".gofr-plot.state.json"
    good = state.read_bytes()
    for bad in (
        {"last_success": "str"},
        {"last_success": {"time": 5, "filename": "x"}},
        {"last_warnings": "w"},
        {"started_at": "yesterday"},
        {"last_scrub": {"time": "2026-01-01T00:00:00+00:00", "checked": 3, "bad": [], "could_not_check": []}},
        {"last_result": 7},
    ):
        state.write_bytes(good)
        _edit(state, lambda d, bad=bad: d.update(bad))
        before = state.read_bytes()
        r = run_cli("status", env=env)
        assert r.returncode == 1, (bad, r.stdout, r.stderr)
        assert "HEALTHY" not in r.stdout.replace("UNHEALTHY", ""), (bad, r.stdout)
        assert "unexpected error" not in r.stderr and "Traceback" not in r.stderr, (bad, r.stderr)
        key = next(iter(bad))
        assert f"state file {state} is damaged: {key}" in r.stdout, (bad, r.stdout)
        code, doc = _status(env)
        assert code == 1 and doc["healthy"] is False, (bad, doc)
        m = run_cli("metrics", env=env)
        assert m.returncode == 0 and "gofr_backup_healthy" in m.stdout, (bad, m.stderr)
        assert state.read_bytes() == before  # status and metrics write nothing
    # the next run writes the state afresh: healthy again
    assert run_cli("now", env=env).returncode == 0
    assert _status(env)[0] == 0
