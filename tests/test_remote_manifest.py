"""The remote manifest is not the only thing between the off-site copies and deletion (issue 12,
item 15): a missing or unreadable one is rebuilt from the objects and their .sha256 files, remote
deletion only ever removes this project's archives under its prefix, and leftovers are removed
only after a grace period, never in the run that found the manifest missing. Against a real S3
server on 127.0.0.1 (`rclone serve s3`), whose objects the tests age on its disk."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from gofrtest import run_cli, write
from test_remote import S3Server, _env, s3  # noqa: F401  (s3 is a fixture)

DAY = 86400


def _age(p: Path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(p, (t, t))


def _now(env: dict[str, str]) -> str:
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0 and "uploaded" in r.stderr, r.stderr
    time.sleep(1.05)  # distinct archive names
    return str(json.loads(r.stdout)["filename"])


def test_a_missing_remote_manifest_deletes_nothing_and_is_rebuilt(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
) -> None:
    # issue 12 item 15: read_manifest returned [] and sync deleted every remote archive as a leftover
    data, env = _env(tmp_path / "app", s3)
    names = [_now(env), _now(env)]
    base = s3.data / "backups" / "off" / "plot"
    old_leftover = write(base / "daily" / "gofr-plot_daily_20200101_000000.tar.gz", "interrupted upload")
    _age(old_leftover, 3)
    shutil.rmtree(tmp_path / "backups")  # the host is lost: nothing local any more ...
    (base / "manifest.json").unlink()  # ... and the remote manifest is gone too
    time.sleep(1.5)  # the server's directory cache (1 s) sees the files the test changed
    before = s3.objects()

    r = run_cli("sync", "--json", env=env)
    assert r.returncode == 0, r.stderr
    after = s3.objects()
    assert set(before) <= set(after), "sync deleted remote objects in the run that found no manifest"
    assert set(after) - set(before) == {"manifest.json"}  # rebuilt
    assert "rebuilt" in r.stderr
    lst = json.loads(run_cli("list", "--remote", "--json", env=env).stdout)
    assert sorted(b["filename"] for b in lst["backups"]) == sorted(names)
    # the next run has a manifest again: the old leftover of ours goes, our archives stay
    r = run_cli("sync", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert s3.objects() == sorted((set(before) | {"manifest.json"}) - {"daily/" + old_leftover.name})
    shutil.rmtree(data / "storage")
    r = run_cli("restore", "--from-remote", "--latest", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert (data / "storage" / "doc1.json").exists()


def test_remote_deletion_touches_only_old_archives_of_ours(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
) -> None:
    # issue 12 item 15: everything under the prefix that the manifest did not list was deleted
    _, env = _env(tmp_path / "app", s3, **{"GOFR_{P}_BACKUP_REMOTE_MAX_COUNT": "1"})
    first = _now(env)
    base = s3.data / "backups" / "off" / "plot"
    foreign = {
        "notes": write(base / "notes.txt", "the operator's notes"),
        "other-project": write(base / "daily" / "gofr-other_daily_20200101_000000.tar.gz", "other"),
        "unrelated": write(base / "daily" / "random.bin", "x"),
        "wrong-tier-dir": write(base / "weekly" / "gofr-plot_daily_20200101_000000.tar.gz", "x"),
        "nested": write(base / "daily" / "sub" / "gofr-plot_daily_20200101_000000.tar.gz", "x"),
    }
    young = write(base / "daily" / "gofr-plot_daily_20200102_000000.tar.gz", "upload in progress elsewhere")
    old = write(base / "daily" / "gofr-plot_daily_20200103_000000.tar.gz", "interrupted upload")
    old_side = write(base / "daily" / "gofr-plot_daily_20200103_000000.tar.gz.sha256", "x")
    for p in [*foreign.values(), old, old_side]:
        _age(p, 3)
    # a hostile or damaged remote manifest: an old entry whose key is someone else's object
    doc = json.loads((base / "manifest.json").read_text())
    doc["backups"].append(
        {
            **doc["backups"][0],
            "filename": "gofr-plot_daily_20200104_000000.tar.gz",
            "created": "2020-01-04T00:00:00+00:00",
            "key": "off/plot/notes.txt",
        }
    )
    (base / "manifest.json").write_text(json.dumps(doc))
    time.sleep(1.5)  # the server's directory cache (1 s) sees the files the test changed
    second = _now(env)  # uploads, applies REMOTE_MAX_COUNT=1 (first goes), removes leftovers

    for what, p in foreign.items():
        assert p.exists(), f"{what}: {p} was deleted"
    assert young.exists(), "a leftover younger than the grace period was deleted"
    assert not old.exists() and not old_side.exists()
    assert sorted(o for o in s3.objects() if o.startswith("daily/gofr-plot") and o.endswith(".gz")) == [
        "daily/gofr-plot_daily_20200102_000000.tar.gz",
        "daily/" + second,
    ]
    assert first not in str(s3.objects())
    lst = json.loads(run_cli("list", "--remote", "--json", env=env).stdout)
    assert "off/plot/notes.txt" in lst["foreign"] and "off/plot/daily/random.bin" in lst["foreign"]
