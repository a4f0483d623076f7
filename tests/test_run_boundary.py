"""Every failure of a run is loud and recorded, whatever raised it, and never ends the service
(issue 13: "errors escape the run boundary")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from gofrtest import SimClock, cli_env, manifest, run_cli, write
from test_remote import KEY, SECRET, S3Server

from gofr_common.backup import BackupConfig, BackupService


def _app(tmp: Path, **extra: str) -> tuple[Path, Path, dict[str, str]]:
    data, backups = tmp / "data", tmp / "backups"
    write(data / "s" / "a.txt", "a")
    write(data / "s" / "b.txt", "b")
    return data, backups, cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "s:s", **extra})


@pytest.fixture
def read_only_s3(tmp_path: Path) -> Iterator[S3Server]:
    srv = S3Server(tmp_path / "s3", read_only=True)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_a_failed_put_never_fails_the_local_backup(tmp_path: Path, read_only_s3: S3Server) -> None:
    # issue 13: boto3 wraps a failed PUT as S3UploadFailedError, which escaped the run: `now` printed a
    # traceback and exited 1 although the local backup was fine
    _, backups, env = _app(
        tmp_path,
        **{
            "GOFR_{P}_BACKUP_REMOTE_URL": "s3://backups/off",
            "GOFR_{P}_BACKUP_REMOTE_ENDPOINT": read_only_s3.endpoint,
            "GOFR_{P}_BACKUP_REMOTE_ACCESS_KEY_ID": KEY,
            "GOFR_{P}_BACKUP_REMOTE_SECRET_ACCESS_KEY": SECRET,
        },
    )
    r = run_cli("now", env=env, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "off-site upload failed" in r.stderr
    [e] = manifest(backups)
    assert e["verified"] is True
    st = json.loads(run_cli("status", "--json", env=env).stdout)
    assert st["remote"]["last_failure"]["error"], st["remote"]
    assert st["last_result"] == "ok"


def test_a_manifest_time_without_offset_is_rebuilt_not_a_crash_for_ever(tmp_path: Path) -> None:
    # issue 13: an entry whose `created` had no UTC offset passed parsing, then crashed the sort in
    # housekeeping: from then on every `now` crashed and retention never ran again
    _, backups, env = _app(tmp_path)
    assert run_cli("now", env=env).returncode == 0
    doc = json.loads((backups / "manifest.json").read_text())
    created = doc["backups"][0]["created"]
    doc["backups"][0]["created"] = created[:19]  # "2026-11-27T05:00:00": no offset
    (backups / "manifest.json").write_text(json.dumps(doc))
    for _ in range(2):
        r = run_cli("now", env=env)
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr
    entries = manifest(backups)
    assert len(entries) == 3
    assert all(datetime.fromisoformat(e["created"]).utcoffset() is not None for e in entries)
    assert run_cli("prune", env=env).returncode == 0


def test_an_unexpected_error_is_one_recorded_line_and_the_post_hook_still_runs(tmp_path: Path) -> None:
    # issue 13: only BackupError was caught around a run; anything else skipped the post-hook, was
    # never recorded, and reached the user as a traceback. Here the state file is a directory, so
    # recording the result raises IsADirectoryError (an OSError, not a BackupError).
    hook_out = tmp_path / "post-hook.txt"
    _, backups, env = _app(
        tmp_path,
        **{"GOFR_{P}_BACKUP_POST_HOOK": f'echo "$GOFR_BACKUP_STATUS $GOFR_BACKUP_ERROR" > {hook_out}'},
    )
    (backups / ".gofr-plot.state.json").mkdir(parents=True)
    r = run_cli("now", env=env)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("gofr-backup: unexpected error") and "Is a directory" in last, r.stderr
    assert hook_out.read_text().startswith("failed unexpected error")
    assert run_cli("status", env=env).returncode == 1


def test_the_service_survives_what_used_to_end_it(tmp_path: Path) -> None:
    # issue 13: the same offset-less entry ended the service at its first housekeeping (a restart
    # loop under `restart: unless-stopped`); the service keeps running and backs up on schedule
    _, backups, env = _app(tmp_path, **{"GOFR_{P}_BACKUP_SCHEDULE": "0 2 * * *"})
    assert run_cli("now", env=env).returncode == 0
    doc = json.loads((backups / "manifest.json").read_text())
    doc["backups"][0]["created"] = doc["backups"][0]["created"][:19]
    (backups / "manifest.json").write_text(json.dumps(doc))
    start = datetime.now().astimezone().replace(hour=12, minute=0, second=0, microsecond=0)
    clock = SimClock(start, until=start + timedelta(days=3))
    svc = BackupService(BackupConfig.from_env(env=env), clock=clock)  # type: ignore[arg-type]
    assert svc.start(max_runs=2) == 0
    scheduled = [e for e in manifest(backups) if e["trigger"] in ("schedule", "catch-up")]
    assert len(scheduled) >= 2, manifest(backups)


def test_encrypt_local_is_honoured_when_verification_is_off(tmp_path: Path) -> None:
    # issue 13: ENCRYPT_LOCAL=true was silently ignored with VERIFY_AFTER_BACKUP=false, and a
    # plaintext archive stayed on disk
    import pyrage

    pub = str(pyrage.x25519.Identity.generate().to_public())
    _, backups, env = _app(
        tmp_path,
        **{
            "GOFR_{P}_BACKUP_VERIFY_AFTER_BACKUP": "false",
            "GOFR_{P}_BACKUP_ENCRYPT_RECIPIENTS": pub,
            "GOFR_{P}_BACKUP_ENCRYPT_LOCAL": "true",
        },
    )
    r = run_cli("now", env=env)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (backups / "daily").iterdir())
    assert len(names) == 2 and names[0].endswith(".tar.gz.age") and names[1].endswith(".tar.gz.age.sha256")
    [e] = manifest(backups)
    assert e["encrypted"] is True and e["filename"].endswith(".age")
