"""A scheduled run whose off-site sync leaves the remote NOT whole (restore points there that
cannot be restored from it) is an off-site failure everyone sees: `status` (unhealthy, one line
naming the points), the metrics, a notification; a later sync that leaves the remote whole clears
it. Against a real S3 server on 127.0.0.1 (`rclone serve s3`), with `now` runs in incremental
mode, as the service's runs do them."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from gofrtest import run_cli, write
from test_notify import Hooks, hooks  # noqa: F401  (hooks is a fixture)
from test_remote import S3Server, _env, s3  # noqa: F401  (s3 is a fixture)

KEEP = {"GOFR_{P}_BACKUP_REMOTE_RETENTION_DAYS": "36500"}


def _now(env: dict[str, str], data: Path, day: int) -> str:
    write(data / "storage" / f"day{day}.txt", f"{day}\n")
    time.sleep(1.05)  # a second apart, so names differ
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0, r.stderr  # the local backup is never failed by the off-site stage
    return str(json.loads(r.stdout)["filename"])


def _status(env: dict[str, str]) -> tuple[int, dict[str, Any], list[str]]:
    r = run_cli("status", "--json", env=env)
    doc = json.loads(r.stdout)
    return r.returncode, doc, run_cli("status", env=env).stdout.splitlines()


def _metric(env: dict[str, str], name: str) -> float | None:
    out = run_cli("metrics", env=env).stdout
    vals = [ln.split()[-1] for ln in out.splitlines() if ln.startswith(f"gofr_backup_{name}{{")]
    return float(vals[0]) if vals else None


def test_a_run_that_leaves_the_remote_not_whole_is_an_offsite_failure_until_it_is_whole(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
    hooks: Hooks,  # noqa: F811
) -> None:
    data, env = _env(
        tmp_path / "app",
        s3,
        **KEEP,
        **{
            "GOFR_{P}_BACKUP_MODE": "incremental",
            "GOFR_{P}_BACKUP_NOTIFY_URLS": hooks.url("/n", "json"),
            "GOFR_{P}_BACKUP_NOTIFY_ON": "failure,warning,recovery,remote",
        },
    )
    backups = tmp_path / "backups"
    names = [_now(env, data, d) for d in range(3)]  # a full, two incrementals, each uploaded
    rc, doc, _ = _status(env)
    assert rc == 0 and doc["remote"].get("broken") is None, doc
    good_upload = doc["remote"]["last_success"]
    entries = {e["filename"]: e for e in json.loads((backups / "manifest.json").read_text())["backups"]}
    assert [entries[n].get("kind") for n in names] == ["full", "incremental", "incremental"]
    # the middle incremental goes from the bucket, and from here: it cannot be uploaded again
    local = backups / entries[names[1]]["path"]
    aside = tmp_path / "aside"
    shutil.move(local, aside)
    (s3.data / "backups" / "off" / "plot" / "daily" / names[1]).unlink()
    time.sleep(1.5)  # the server's directory cache
    names.append(_now(env, data, 3))  # a full (the local chain is broken too); the remote: not whole
    rc, doc, text = _status(env)
    assert rc != 0, doc
    line = [r for r in doc["reasons"] if "off-site" in r]
    assert len(line) == 1 and "NOT whole" in line[0] and names[2] in line[0], doc["reasons"]
    assert any("NOT whole" in t and names[2] in t for t in text), text
    assert doc["remote"]["broken"]["broken"] == [names[2]] and doc["remote"]["last_success"] == good_upload
    assert _metric(env, "remote_not_whole") == 2  # the lost archive and the point that needed it
    assert _metric(env, "healthy") == 0
    [n] = [n for n in hooks.notifications() if "off-site" in n["title"]]
    assert "NOT WHOLE" in n["title"] and names[2] in n["message"], n
    # the next run: the lost archive is no longer in the remote manifest; the broken point is an
    # older one now (a new chain started with the full above): the remote restores its newest
    # point, so the off-site stage is whole again, and the old point is still listed as broken
    names.append(_now(env, data, 4))
    rc, doc, text = _status(env)
    assert rc == 0 and not [r for r in doc["reasons"] if "off-site" in r], doc["reasons"]
    assert doc["remote"]["broken"] is None and doc["remote"]["last_success"] > good_upload
    assert not any("NOT whole" in t for t in text), text
    assert _metric(env, "remote_not_whole") == 0
    assert any("up to date again" in n["title"] for n in hooks.notifications()), hooks.notifications()
    r = run_cli("list", "--remote", env=env)
    assert r.returncode == 0 and "NOT RESTORABLE" in r.stdout and names[2] in r.stdout, r.stdout


def test_sync_fails_while_the_newest_remote_point_cannot_be_restored(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
) -> None:
    """No new chain since the loss: the newest remote restore point itself cannot be restored, so
    every sync fails (exit 1, one stderr line naming it) and status stays unhealthy."""
    data, env = _env(tmp_path / "app", s3, **KEEP, **{"GOFR_{P}_BACKUP_MODE": "incremental"})
    backups = tmp_path / "backups"
    names = [_now(env, data, d) for d in range(3)]
    entries = {e["filename"]: e for e in json.loads((backups / "manifest.json").read_text())["backups"]}
    (s3.data / "backups" / "off" / "plot" / "daily" / names[1]).unlink()
    shutil.move(backups / entries[names[1]]["path"], tmp_path / "aside")
    time.sleep(1.5)
    for _ in range(2):
        r = run_cli("sync", env=env)
        assert r.returncode == 1 and names[2] in r.stderr.splitlines()[-1], r.stderr
        rc, doc, _ = _status(env)
        assert rc != 0 and doc["remote"]["broken"]["broken"] == [names[2]], doc
