"""Backup -> verify -> list -> restore through the real CLI, for every codec."""

from __future__ import annotations

import bz2
import json
import os
import random
import shutil
import subprocess
from datetime import UTC
from typing import Any

import pytest
from gofrtest import manifest, needs, run_cli, snapshot

from gofr_common.backup.codecs import cpu_threads

CODECS = {"gzip": ".tar.gz", "bzip2": ".tar.bz2", "xz": ".tar.xz", "zstd": ".tar.zst", "none": ".tar"}
DECOMPRESS = {
    "gzip": ["gzip", "-dc"],
    "bzip2": ["bzip2", "-dc"],
    "xz": ["xz", "-dc"],
    "zstd": ["zstd", "-dc"],
    "none": ["cat"],
}


def _now(app: dict[str, Any], *extra: str, **env: str) -> dict[str, Any]:
    e = {**app["env"], **env}
    r = run_cli("now", "--json", *extra, env=e)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("codec", list(CODECS))
def test_round_trip_every_codec(app: dict[str, Any], codec: str) -> None:
    # one file large enough for several compression pieces/jobs/blocks (bzip2 on two cores writes
    # 4 MiB pieces as separate streams), read whole (> 1 MiB, <= 8 MiB) and written in three parts
    rnd = random.Random(3)
    blob = rnd.randbytes(3 << 20) + b"".join(
        b"line %d of a log\n" % rnd.randrange(10**6) for _ in range(180_000)
    )
    (app["data"] / "storage" / "blob.bin").write_bytes(blob)
    env = {**app["env"], "GOFR_PLOT_BACKUP_COMPRESSION": codec}
    entry = _now(app, **{"GOFR_PLOT_BACKUP_COMPRESSION": codec})
    assert entry["filename"].endswith(CODECS[codec])
    assert entry["filename"].startswith("gofr-plot_daily_")
    assert entry["verified"] is True and entry["complete"] is True
    archive = app["backups"] / entry["path"]
    assert archive.is_file() and archive.parent.name == "daily"

    # sha256sum -c works in the archive's directory
    r = subprocess.run(
        ["sha256sum", "-c", archive.name + ".sha256"], cwd=archive.parent, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr

    # GNU tar and the codec's own CLI read it; members are stored under their names
    dec = subprocess.run([*DECOMPRESS[codec], str(archive)], capture_output=True, check=True).stdout
    names = (
        subprocess.run(["tar", "-t"], input=dec, capture_output=True, check=True).stdout.decode().splitlines()
    )
    assert names[0] == ".gofr-backup.json" and names[-1] == ".gofr-backup-end.json"
    assert "cfg" in names and "logs/app.log" in names and "storage/empty-dir/" in names
    if codec == "bzip2" and cpu_threads() > 1:  # pieces compressed in parallel: several streams
        one = bz2.BZ2Decompressor()
        one.decompress(archive.read_bytes())
        assert one.eof and one.unused_data.startswith(b"BZh"), "expected a multi-stream bzip2 file"

    # restore a copy under --target and compare everything
    target = app["tmp"] / "restored"
    r = run_cli("restore", entry["filename"], "--target", str(target), "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert snapshot(target / "storage") == snapshot(app["data"] / "storage")
    assert snapshot(target / "auth") == snapshot(app["data"] / "auth")
    assert snapshot(target / "cfg") == snapshot(app["data"] / "config.json")
    assert snapshot(target / "logs") == snapshot(app["logs"])


def test_restore_in_place_removes_extras_and_brings_back_deleted(app: dict[str, Any]) -> None:
    before = {
        n: snapshot(p)
        for n, p in (("s", app["data"] / "storage"), ("l", app["logs"]), ("c", app["data"] / "config.json"))
    }
    entry = _now(app)
    # damage the live data
    shutil.rmtree(app["data"] / "storage" / "nested")
    (app["data"] / "storage" / "new-file").write_text("not in the backup")
    (app["data"] / "config.json").write_text("changed")
    (app["logs"] / "app.log").unlink()

    dry = run_cli("restore", entry["filename"], "--dry-run", "--json", env=app["env"])
    assert dry.returncode == 0, dry.stderr
    plan = {t["name"]: t for t in json.loads(dry.stdout)["targets"]}
    assert "storage/new-file" in plan["storage"]["removed"]
    assert "storage/nested/deep/blob.bin" in plan["storage"]["created"]
    assert "cfg" in plan["cfg"]["replaced"]
    assert (app["data"] / "storage" / "new-file").exists(), "dry-run must not touch anything"

    r = run_cli("restore", "--latest", "--yes", env=app["env"])
    assert r.returncode == 0, r.stderr
    assert snapshot(app["data"] / "storage") == before["s"]
    assert snapshot(app["logs"]) == before["l"]
    assert snapshot(app["data"] / "config.json") == before["c"]
    leftovers = [p for p in app["data"].parent.rglob(".gofr-restore-*")]
    assert leftovers == []


def test_restore_only_one_name(app: dict[str, Any]) -> None:
    entry = _now(app)
    (app["data"] / "auth" / "tokens.json").write_text("changed")
    (app["data"] / "storage" / "doc1.json").write_text("changed too")
    r = run_cli("restore", entry["filename"], "--only", "auth", "--yes", env=app["env"])
    assert r.returncode == 0, r.stderr
    assert (app["data"] / "auth" / "tokens.json").read_text() == '{"t": "secret"}'
    assert (app["data"] / "storage" / "doc1.json").read_text() == "changed too"
    bad = run_cli("restore", entry["filename"], "--only", "nope", "--yes", env=app["env"])
    assert bad.returncode == 2 and "nope" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_restore_needs_yes_without_a_terminal(app: dict[str, Any]) -> None:
    entry = _now(app)
    (app["data"] / "config.json").write_text("changed")
    r = run_cli("restore", entry["filename"], env=app["env"], input="")
    assert r.returncode == 2
    assert "--yes" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (app["data"] / "config.json").read_text() == "changed"


def test_interactive_menu_and_confirmation(app: dict[str, Any]) -> None:
    _now(app)
    (app["data"] / "config.json").write_text("changed")
    # answer "no": nothing changes
    r = run_cli("restore", "--interactive", env=app["env"], input="1\nn\n")
    assert r.returncode == 1 and "cancelled" in r.stderr
    assert "1)" in r.stderr and "REMOVED" in r.stderr
    assert (app["data"] / "config.json").read_text() == "changed"
    # answer "yes"
    r = run_cli("restore", "--interactive", env=app["env"], input="1\ny\n")
    assert r.returncode == 0, r.stderr
    assert (app["data"] / "config.json").read_text() == '{"single": "file"}'
    r = run_cli("restore", "--interactive", env=app["env"], input="7\n")
    assert r.returncode == 2 and "not a number from 1 to 1" in r.stderr


def test_missing_path_is_a_warning_and_no_data_is_an_error(app: dict[str, Any]) -> None:
    env = {**app["env"], "GOFR_PLOT_BACKUP_PATHS": "storage:storage,gone:not-there"}
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0, r.stderr
    entry = json.loads(r.stdout)
    assert any("not-there" in w for w in entry["warnings"])
    env = {**app["env"], "GOFR_PLOT_BACKUP_PATHS": "a:nope1,b:nope2"}
    before = manifest(app["backups"])
    r = run_cli("now", env=env)
    assert r.returncode == 1
    assert "No data found to backup" in r.stderr and "nope1" in r.stderr and "nope2" in r.stderr
    assert manifest(app["backups"]) == before
    assert len(list((app["backups"] / "daily").glob("*.tar.gz"))) == 1


def test_same_second_collision_gets_a_suffix(app: dict[str, Any]) -> None:
    from datetime import datetime

    from gofrtest import SimClock

    from gofr_common.backup import BackupConfig, BackupService

    cfg = BackupConfig.from_env(env=app["env"])
    clock = SimClock(datetime(2026, 3, 1, 2, 0, tzinfo=UTC))
    svc = BackupService(cfg, clock=clock)  # type: ignore[arg-type]
    a, b = svc.create_backup(), svc.create_backup()
    assert a is not None and b is not None
    assert a.name == "gofr-plot_daily_20260301_020000.tar.gz"
    assert b.name == "gofr-plot_daily_20260301_020000_1.tar.gz"
    assert svc.verify_backup(a) and svc.verify_backup(b)


def test_archive_name_uses_local_time(app: dict[str, Any]) -> None:
    env = {**app["env"], "TZ": "Asia/Kathmandu"}  # +05:45, so it cannot match UTC by accident
    r = run_cli("now", "--json", env=env)
    entry = json.loads(r.stdout)
    assert entry["created"].endswith("+05:45")
    from datetime import datetime

    created = datetime.fromisoformat(entry["created"])
    assert created.strftime("%Y%m%d_%H%M%S") in entry["filename"]


def test_embedded_json_describes_the_archive(app: dict[str, Any]) -> None:
    from gofr_common.backup.archive_format import read_meta

    entry = _now(app)
    meta = read_meta(app["backups"] / entry["path"])
    assert meta["project"] == "plot" and meta["tier"] == "daily"
    assert meta["paths"] == {"storage": "storage", "auth": "auth", "cfg": "config.json", "logs": "../logs"}
    assert meta["kinds"]["cfg"] == "file" and meta["kinds"]["storage"] == "dir"
    assert meta["file_count"] == entry["file_count"] > 10
    assert meta["source_bytes"] == entry["source_bytes"]


def test_list_json_and_text(app: dict[str, Any]) -> None:
    e1 = _now(app)
    e2 = _now(app, "--tier", "weekly")
    r = run_cli("list", "--json", env=app["env"])
    doc = json.loads(r.stdout)
    assert [b["filename"] for b in doc["backups"]] == [e2["filename"], e1["filename"]]
    assert (
        doc["summary"]["count"] == 2
        and doc["summary"]["total_size_bytes"] == e1["size_bytes"] + e2["size_bytes"]
    )
    # untracked and missing
    (app["backups"] / e1["path"]).unlink()
    stray = app["backups"] / "daily" / "gofr-plot_daily_20200101_000000.tar.gz"
    shutil.copy(app["backups"] / e2["path"], stray)
    doc = json.loads(run_cli("list", "--json", env=app["env"]).stdout)
    assert doc["summary"]["missing"] == [e1["path"]]
    assert doc["summary"]["untracked"] == ["daily/" + stray.name]
    text = run_cli("list", env=app["env"]).stdout
    assert "WEEKLY (1)" in text and "MISSING" in text and "UNTRACKED" in text and "verified" in text


def test_config_command(app: dict[str, Any]) -> None:
    r = run_cli("config", "--json", env=app["env"])
    d = json.loads(r.stdout)
    assert d["project"] == "plot" and d["compression"] == "gzip" and d["compression_level"] == 6
    assert d["retention_days"] == 30 and d["max_count"] == 90 and d["schedule"] == "0 2 * * *"
    assert [p["name"] for p in d["paths"]] == ["storage", "auth", "cfg", "logs"]
    assert d["paths"][3]["resolved"] == str(app["logs"])
    # CLI options override the environment
    r = run_cli("--project", "doc", "config", "--json", "--backup-dir", "/x/y", env=app["env"])
    d = json.loads(r.stdout)
    assert d["project"] == "doc" and d["backup_dir"] == "/x/y"
    assert not os.path.exists("/x/y")


@pytest.mark.parametrize(
    "codec,levels", [("gzip", (1, 6, 9)), ("zstd", (1, 3, 19)), ("xz", (0, 3, 6)), ("bzip2", (1, 9))]
)
def test_compression_level_is_honoured(app: dict[str, Any], codec: str, levels: tuple[int, ...]) -> None:
    # compressible, varied text: every level step changes the size
    import random

    rnd = random.Random(7)
    words = [f"word{i}" for i in range(5000)]
    (app["logs"] / "big.log").write_text("\n".join(" ".join(rnd.choices(words, k=12)) for _ in range(60000)))
    sizes = []
    for lvl in levels:
        e = _now(
            app, **{"GOFR_PLOT_BACKUP_COMPRESSION": codec, "GOFR_PLOT_BACKUP_COMPRESSION_LEVEL": str(lvl)}
        )
        sizes.append(e["size_bytes"])
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes), sizes


def test_owners_come_back_when_restoring_as_root(app: dict[str, Any]) -> None:
    needs(os.geteuid() == 0, "restoring owners needs root")
    os.chown(app["data"] / "auth" / "tokens.json", 1000, 1000)
    os.chown(app["data"] / "storage" / "nested", 1234, 5678)
    os.lchown(app["data"] / "storage" / "link-to-doc", 4321, 4321)
    before = snapshot(app["data"] / "storage"), snapshot(app["data"] / "auth")
    entry = _now(app)
    os.chown(app["data"] / "auth" / "tokens.json", 0, 0)
    os.chown(app["data"] / "storage" / "nested", 0, 0)
    r = run_cli("restore", entry["filename"], "--yes", env=app["env"])
    assert r.returncode == 0, r.stderr
    assert (snapshot(app["data"] / "storage"), snapshot(app["data"] / "auth")) == before
    assert os.stat(app["data"] / "auth" / "tokens.json").st_uid == 1000
    assert os.lstat(app["data"] / "storage" / "link-to-doc").st_uid == 4321


def test_directory_setgid_and_sticky_come_back_file_setuid_does_not(app: dict[str, Any]) -> None:
    """A shared-group directory (setgid: new files inherit its group) and a world-writable one
    (sticky: only owners may delete) keep those bits through a restore: losing setgid breaks the
    group-based read access the backup itself relies on, and losing sticky widens who may delete.
    A file's setuid/setgid bits are never restored from an archive."""
    shared = app["data"] / "storage" / "shared"
    pub = app["data"] / "storage" / "pub"
    shared.mkdir()
    pub.mkdir()
    os.chmod(shared, 0o2770)
    os.chmod(pub, 0o1777)
    os.chmod(app["data"] / "storage", 0o2755)  # the top of a path too
    tool = app["data"] / "storage" / "tool"
    tool.write_text("#!/bin/sh\n")
    os.chmod(tool, 0o6755)
    entry = _now(app)
    r = run_cli("restore", entry["filename"], "--dry-run", "--json", env=app["env"])
    assert r.returncode == 0, r.stderr
    plan = r.stdout
    assert "storage/shared" not in plan and "storage/pub" not in plan, plan  # unchanged, not "replace"
    shutil.rmtree(app["data"] / "storage")
    r = run_cli("restore", entry["filename"], "--yes", env=app["env"])
    assert r.returncode == 0, r.stderr
    assert oct(os.stat(app["data"] / "storage").st_mode & 0o7777) == oct(0o2755)
    assert oct(os.stat(shared).st_mode & 0o7777) == oct(0o2770)
    assert oct(os.stat(pub).st_mode & 0o7777) == oct(0o1777)
    assert oct(os.stat(tool).st_mode & 0o7777) == oct(0o755)
