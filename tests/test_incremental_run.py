"""Incremental mode end to end (issue 17): the CLI's `now` and the scheduled service write chains
of a full and incrementals, record them in the manifest, restart a chain with a full when they
must, and GNU tar alone restores each day's exact tree from the chain. Everything is real: files,
the CLI as a subprocess, GNU tar, SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from gofrtest import (
    SimClock,
    cli_env,
    manifest,
    partials,
    popen_cli,
    run_cli,
    snapshot,
    write,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gofr_common.backup import BackupConfig, BackupService
from gofr_common.backup.archive_format import read_meta

TAR = "/usr/bin/tar"
OWNERS = os.geteuid() == 0
TOPS = {"storage": "storage", "auth": "auth", "cfg": "config.json", "logs": "../logs"}


def inc_env(app: dict[str, Any], **extra: str) -> dict[str, str]:
    return {**app["env"], "GOFR_PLOT_BACKUP_MODE": "incremental", **extra}


def now(env: dict[str, str]) -> tuple[dict[str, Any], str]:
    """One `now`: the new manifest entry and the log (stderr), which says why a full or not."""
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def daily(backups: Path) -> list[dict[str, Any]]:
    return sorted((e for e in manifest(backups) if e["tier"] == "daily"), key=lambda e: e["created"])


def chain_files(backups: Path, last: dict[str, Any]) -> list[Path]:
    """The archives a restore of ``last`` needs, full first, by following the manifest's parent
    links here (independently of chain.py), each checked against the sha256 its child names."""
    by_name = {e["filename"]: e for e in daily(backups)}
    out, e = [], last
    while True:
        out.append(backups / e["path"])
        if e.get("kind") != "incremental":
            break
        p = by_name[e["parent"]["filename"]]
        assert p["sha256"] == e["parent"]["sha256"]
        e = p
    return list(reversed(out))


def gnu_restore(archives: list[Path], into: Path) -> None:
    """GNU tar alone, the way the README says: into an empty directory, full first."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    for a in archives:
        r = subprocess.run(
            [TAR, "--listed-incremental=/dev/null", "-xf", str(a), "-C", str(into)],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr


def live(app: dict[str, Any]) -> dict[str, Any]:
    return {name: snapshot((app["data"] / rel).resolve(), OWNERS) for name, rel in TOPS.items()}


def restored(into: Path) -> dict[str, Any]:
    return {name: snapshot(into / name, OWNERS) for name in TOPS}


def assert_chain_restores_today(app: dict[str, Any], last: dict[str, Any]) -> None:
    into = app["tmp"] / "gnu"
    gnu_restore(chain_files(app["backups"], last), into)
    want, got = live(app), restored(into)
    for name in TOPS:
        assert got[name] == want[name], name


def shift_created(backups: Path, filename: str, by: timedelta) -> None:
    """Make an archive look older in the manifest (the days between runs, without sleeping)."""
    doc = json.loads((backups / "manifest.json").read_text())
    for e in doc["backups"]:
        if e["filename"] == filename:
            e["created"] = (datetime.fromisoformat(e["created"]) - by).isoformat()
    (backups / "manifest.json").write_text(json.dumps(doc))


def flip(p: Path, at: int | None = None) -> None:
    b = bytearray(p.read_bytes())
    i = len(b) // 2 if at is None else at
    b[i] ^= 0xFF
    p.write_bytes(bytes(b))


# -- the days --------------------------------------------------------------------------------------
def day1(d: Path) -> None:
    s = d / "storage"
    write(s / "doc1.json", '{"id": 1, "text": "changed"}')
    write(s / "new" / "a.txt", "new file\n")
    os.unlink(s / "exec.sh")
    os.chmod(s / "read-only.txt", 0o440)


def day2(d: Path) -> None:
    s = d / "storage"
    os.rename(s / "nested", s / "nested2")  # a directory renamed
    os.rename(s / "doc1.json", s / "doc1-renamed.json")  # a file renamed
    os.unlink(s / "link-to-doc")
    os.symlink("doc1-renamed.json", s / "link-to-doc")  # a link retargeted
    os.rmdir(s / "empty-dir")  # a directory deleted
    write(d / "auth" / "tokens.json", '{"t": "rotated"}', 0o600)


def day3(d: Path) -> None:
    s = d / "storage"
    shutil.rmtree(s / "new")
    write(s / "new", "a directory became a file\n")
    os.unlink(s / "group-writable.txt")
    (s / "group-writable.txt").mkdir()  # and a file a directory
    with open(d.parent / "logs" / "app.log", "a") as f:
        f.write("line 3\n")


def day4(d: Path) -> None:
    pass  # a quiet day: nothing changed


def test_a_chain_of_days_restored_by_gnu_tar_alone_equals_each_day(app: dict[str, Any]) -> None:
    """First run a full, then incrementals over the newest, each small; the chain up to each day,
    extracted by GNU tar alone in order into an empty directory, is that day's tree (deletions,
    renames, type changes included); and plain `tar -x` of one incremental gives only its changes."""
    env = inc_env(app)
    first, log = now(env)
    assert first["kind"] == "full" and first["parent"] is None and first["full"] is None
    assert "full: no earlier daily archive" in log
    assert (app["backups"] / (first["path"] + ".snap")).is_file()
    assert_chain_restores_today(app, first)
    prev = first
    # day 2 renames the directory that holds the 200 KB blob: stored again under its new name
    for change, small in ((day1, True), (day2, False), (day3, True), (day4, True)):
        change(app["data"])
        e, log = now(env)
        assert e["kind"] == "incremental", log
        assert e["parent"] == {"filename": prev["filename"], "sha256": prev["sha256"]}
        assert e["full"] == {"filename": first["filename"], "sha256": first["sha256"]}
        assert f"incremental over {prev['filename']}" in log
        assert not small or e["size_bytes"] < first["size_bytes"] / 10  # one day's changes only
        meta = read_meta(app["backups"] / e["path"])
        assert meta["kind"] == "incremental" and meta["chain"]["parent"] == e["parent"]
        assert_chain_restores_today(app, e)
        prev = e
    # plain tar -x of one incremental alone: only that day's stored files (the quiet day: none)
    alone = app["tmp"] / "alone"
    alone.mkdir()
    r = subprocess.run(
        [TAR, "-xf", str(app["backups"] / prev["path"]), "-C", str(alone)], capture_output=True
    )
    assert r.returncode == 0, r.stderr
    files = [p for p in alone.rglob("*") if p.is_file() and not p.name.startswith(".gofr-backup")]
    assert files == []
    # list shows each archive's kind; --json has kind and parent
    r = run_cli("list", env=env)
    assert r.returncode == 0
    assert r.stdout.count(" incremental ") == 4 and r.stdout.count(" full ") == 1, r.stdout
    r = run_cli("list", "--json", env=env)
    js = {e["filename"]: e for e in json.loads(r.stdout)["backups"]}
    assert js[prev["filename"]]["kind"] == "incremental" and js[prev["filename"]]["parent"] == prev["parent"]
    assert js[first["filename"]]["kind"] == "full" and js[first["filename"]]["parent"] is None
    assert all(e["chain_broken"] is None for e in js.values())
    st = run_cli("status", "--json", env=env)
    assert st.returncode == 0, st.stdout
    g = json.loads(st.stdout)["restorable"]
    assert g["filename"] == prev["filename"] and g["kind"] == "incremental"
    assert g["chain"] == [p.name for p in chain_files(app["backups"], prev)] and len(g["chain"]) == 5
    text = run_cli("status", env=env).stdout
    assert f"incremental: a chain of 5 archives from {first['filename']}" in text


def test_full_every_bounds_a_chain(app: dict[str, Any]) -> None:
    env = inc_env(app, GOFR_PLOT_BACKUP_FULL_EVERY="2d")
    first, _ = now(env)
    shift_created(app["backups"], first["filename"], timedelta(days=1))
    write(app["data"] / "storage" / "d1.txt", "1")
    e, log = now(env)
    assert e["kind"] == "incremental", log
    shift_created(app["backups"], first["filename"], timedelta(days=1, hours=1))  # now 2d 1h old
    write(app["data"] / "storage" / "d2.txt", "2")
    e, log = now(env)
    assert e["kind"] == "full", log
    assert f"full: the chain's full {first['filename']} is 2.0d old (FULL_EVERY=2d)" in log
    assert_chain_restores_today(app, e)
    write(app["data"] / "storage" / "d3.txt", "3")
    e2, _ = now(env)  # the new chain goes on from the new full
    assert e2["kind"] == "incremental" and e2["full"]["filename"] == e["filename"]
    assert_chain_restores_today(app, e2)


def _three_days(app: dict[str, Any], env: dict[str, str]) -> list[dict[str, Any]]:
    out = [now(env)[0]]
    for i, change in enumerate((day1, day2)):
        change(app["data"])
        out.append(now(env)[0])
        assert out[-1]["kind"] == "incremental", i
    return out


def _status(env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    text = run_cli("status", env=env)
    js = run_cli("status", "--json", env=env)
    assert js.returncode == text.returncode
    return js.returncode, json.loads(js.stdout), text.stdout


def test_a_deleted_middle_archive_breaks_the_later_points_and_the_next_run_is_a_full(
    app: dict[str, Any],
) -> None:
    env = inc_env(app)
    full, inc1, inc2 = _three_days(app, env)
    assert _status(env)[0] == 0
    os.unlink(app["backups"] / inc1["path"])
    code, st, text = _status(env)
    assert code != 0
    broken = [r for r in st["reasons"] if "chain is broken" in r]
    assert len(broken) == 1 and inc2["filename"] in broken[0] and inc1["filename"] in broken[0], st["reasons"]
    assert inc1["filename"] in text and "UNHEALTHY" in text
    assert st["restorable"]["filename"] == full["filename"]  # never inc2: its chain is broken
    js = {e["filename"]: e for e in json.loads(run_cli("list", "--json", env=env).stdout)["backups"]}
    assert inc1["filename"] in js[inc2["filename"]]["chain_broken"]
    assert js[full["filename"]]["chain_broken"] is None
    day3(app["data"])
    e, log = now(env)
    assert e["kind"] == "full", log
    assert f"full: the chain of {inc2['filename']} is broken: {inc1['filename']}" in log
    assert _status(env)[0] == 0
    assert_chain_restores_today(app, e)


def test_a_corrupted_middle_archive_found_by_verify_breaks_the_chain_and_the_next_run_heals_it(
    app: dict[str, Any],
) -> None:
    """A flipped byte keeps the size: status (stats only) cannot see it; verify (or the scheduled
    scrub) reads the archive, records it failed, and from then on exactly the restore points after
    it are broken (the ones before stay restorable); the next run starts a new chain."""
    env = inc_env(app)
    full, inc1, inc2 = _three_days(app, env)
    day3(app["data"])
    inc3, _ = now(env)
    flip(app["backups"] / inc2["path"])
    r = run_cli("verify", "--all", env=env)
    assert r.returncode != 0 and inc2["filename"] in r.stdout + r.stderr
    code, st, text = _status(env)
    assert code != 0
    broken = [r for r in st["reasons"] if "chain is broken" in r]
    assert len(broken) == 1 and inc2["filename"] in broken[0] and "failed verification" in broken[0]
    assert inc3["filename"] in broken[0]
    assert st["restorable"]["filename"] == inc1["filename"]  # before the bad one: still a restore point
    js = {e["filename"]: e for e in json.loads(run_cli("list", "--json", env=env).stdout)["backups"]}
    assert js[full["filename"]]["chain_broken"] is None and js[inc1["filename"]]["chain_broken"] is None
    assert "failed verification" in js[inc3["filename"]]["chain_broken"]
    assert "NOT RESTORABLE" in run_cli("list", env=env).stdout
    day4(app["data"])
    write(app["data"] / "storage" / "day5.txt", "5")
    e, log = now(env)
    assert e["kind"] == "full", log
    assert f"the chain of {inc3['filename']} is broken: {inc2['filename']} failed verification" in log
    code, st, _ = _status(env)
    assert not [r for r in st["reasons"] if "chain is broken" in r]
    assert st["restorable"]["filename"] == e["filename"]
    assert_chain_restores_today(app, e)


def test_a_truncated_middle_archive_is_seen_by_status_without_a_read(app: dict[str, Any]) -> None:
    env = inc_env(app)
    _full, inc1, inc2 = _three_days(app, env)
    p = app["backups"] / inc1["path"]
    p.write_bytes(p.read_bytes()[:-100])
    code, st, _ = _status(env)
    assert code != 0
    assert any(
        "chain is broken" in r and inc1["filename"] in r and "bytes on disk" in r for r in st["reasons"]
    )
    e, log = now(env)
    assert e["kind"] == "full" and inc1["filename"] in log


@pytest.mark.parametrize("how", ["missing", "damaged", "another archive's"])
def test_a_bad_snapshot_only_costs_a_full(app: dict[str, Any], how: str) -> None:
    env = inc_env(app)
    full, inc1 = now(env)[0], None
    day1(app["data"])
    inc1 = now(env)[0]
    snap = app["backups"] / (inc1["path"] + ".snap")
    if how == "missing":
        os.unlink(snap)
    elif how == "damaged":
        flip(snap, at=len(snap.read_bytes()) - 5)
    else:
        shutil.copy(app["backups"] / (full["path"] + ".snap"), snap)
    day2(app["data"])
    e, log = now(env)
    assert e["kind"] == "full", log
    assert f"full: {inc1['filename']}.snap is {'missing' if how == 'missing' else 'damaged'}" in log
    assert_chain_restores_today(app, e)


def test_the_first_incremental_after_full_mode_archives_is_a_full(app: dict[str, Any]) -> None:
    old, _ = now(app["env"])  # full mode: as before
    assert "kind" not in old
    e, log = now(inc_env(app))
    assert e["kind"] == "full"
    assert f"the newest archive {old['filename']} was written in full mode" in log


def test_full_mode_is_unchanged(app: dict[str, Any]) -> None:
    """No kind, no chain, no snapshot, no GNU.dumpdir: the archives full mode always wrote."""
    for _ in range(2):
        e, log = now(app["env"])
        assert not {"kind", "parent", "full"} & set(e)
        assert "incremental" not in log and "full:" not in log
        a = app["backups"] / e["path"]
        assert not (app["backups"] / (e["path"] + ".snap")).exists()
        meta = read_meta(a)
        assert "kind" not in meta and "chain" not in meta
        with tarfile.open(a, "r|*") as tf:
            assert not any("GNU.dumpdir" in m.pax_headers for m in tf)
    assert list((app["backups"] / "daily").glob("*.snap")) == []


def test_a_tier_run_in_incremental_mode_writes_a_plain_full(app: dict[str, Any]) -> None:
    env = inc_env(app)
    now(env)
    r = run_cli("now", "--tier", "weekly", "--json", env=env)
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    assert e["tier"] == "weekly" and "kind" not in e
    assert not (app["backups"] / (e["path"] + ".snap")).exists()


def test_sigkill_during_an_incremental_leaves_nothing_and_the_next_run_is_right(app: dict[str, Any]) -> None:
    env = inc_env(app)
    full, _ = now(env)
    write(app["data"] / "storage" / "big.bin", os.urandom(48 << 20))
    p = popen_cli("now", env=env)
    seen: dict[Path, int] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        seen = partials(app["backups"])
        archive_parts = [x for x in seen if x.name.endswith(".tar.gz.partial")]
        if archive_parts and seen[archive_parts[0]] > 256 << 10:
            break
        time.sleep(0.005)
    assert p.poll() is None, "the backup finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=30)
    left = partials(app["backups"])
    assert any(x.name.endswith(".snap.partial") for x in left), left  # what the kill left behind
    assert any(x.name.endswith(".tar.gz.partial") for x in left), left
    killed = {x.name.removesuffix(".partial") for x in left}
    # as if it had been killed between renaming its .snap and its archive: an orphan .snap
    orphan = app["backups"] / "daily" / "gofr-plot_daily_20200101_020000.tar.gz.snap"
    shutil.copy(app["backups"] / (full["path"] + ".snap"), orphan)
    other = app["backups"] / "daily" / "gofr-other_daily_20200101_020000.tar.gz.snap"
    shutil.copy(orphan, other)  # another project's: never ours to remove
    assert [e["filename"] for e in daily(app["backups"])] == [full["filename"]]
    write(app["data"] / "storage" / "after.txt", "after the kill\n")
    e, log = now(env)
    assert partials(app["backups"]) == {}
    assert list(app["backups"].rglob("*.snap.partial")) == []
    names = [x["filename"] for x in daily(app["backups"])]
    assert names == [full["filename"], e["filename"]]
    assert e["kind"] == "incremental" and e["parent"]["filename"] == full["filename"], log
    assert not killed & {n for n in names if e["filename"] != n}
    orphans = [s for s in (app["backups"] / "daily").glob("*.snap") if not s.with_suffix("").exists()]
    assert orphans == [other]
    assert "removed what killed runs left" in log and orphan.name in log
    assert_chain_restores_today(app, e)


BAD = [
    ("GOFR_PLOT_BACKUP_MODE", "differential", "expected full or incremental"),
    ("GOFR_PLOT_BACKUP_MODE", "", "expected full or incremental"),
    ("GOFR_PLOT_BACKUP_FULL_EVERY", "7", "followed by h, d or w"),
    ("GOFR_PLOT_BACKUP_FULL_EVERY", "1.5d", "followed by h, d or w"),
    ("GOFR_PLOT_BACKUP_FULL_EVERY", "10m", "followed by h, d or w"),
    ("GOFR_PLOT_BACKUP_FULL_EVERY", "0d", "from 1h to 36500d"),
    ("GOFR_PLOT_BACKUP_FULL_EVERY", "99999w", "from 1h to 36500d"),
]


@pytest.mark.parametrize("var,value,allowed", BAD, ids=[f"{v}={x}" for v, x, _ in BAD])
def test_bad_mode_or_full_every_one_line_exit_2_nothing_written(
    tmp_path: Path, var: str, value: str, allowed: str
) -> None:
    backups = tmp_path / "backups"
    (tmp_path / "data" / "storage").mkdir(parents=True)
    r = run_cli("now", env=cli_env(tmp_path / "data", backups, **{var: value}))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and var in lines[0] and allowed in lines[0], r.stderr
    assert not backups.exists()


def test_incremental_with_encrypt_local_is_refused(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    (tmp_path / "data" / "storage").mkdir(parents=True)
    key = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
    env = cli_env(
        tmp_path / "data",
        backups,
        GOFR_PLOT_BACKUP_MODE="incremental",
        GOFR_PLOT_BACKUP_ENCRYPT_LOCAL="true",
        GOFR_PLOT_BACKUP_ENCRYPT_RECIPIENTS=key,
    )
    r = run_cli("now", env=env)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "GOFR_PLOT_BACKUP_MODE" in lines[0] and "ENCRYPT_LOCAL" in lines[0], r.stderr
    assert ".snap" in lines[0]
    assert not backups.exists()
    env["GOFR_PLOT_BACKUP_MODE"] = "full"  # the same keys in full mode are fine
    assert run_cli("config", env=env).returncode == 0


def test_defaults_and_values() -> None:
    c = BackupConfig.from_env(env={"GOFR_PROJECT": "plot"})
    assert (c.mode, c.full_every) == ("full", timedelta(days=7))
    for raw, td in [("12h", timedelta(hours=12)), ("30d", timedelta(days=30)), ("2W", timedelta(weeks=2))]:
        c = BackupConfig.from_env(
            env={
                "GOFR_PROJECT": "plot",
                "GOFR_PLOT_BACKUP_MODE": " Incremental ",
                "GOFR_PLOT_BACKUP_FULL_EVERY": raw,
            }
        )
        assert (c.mode, c.full_every) == ("incremental", td)


def test_a_rebuilt_manifest_recovers_kind_parent_and_full(app: dict[str, Any]) -> None:
    env = inc_env(app)
    es = _three_days(app, env)
    want = {e["filename"]: (e["kind"], e["parent"], e["full"]) for e in es}
    os.unlink(app["backups"] / "manifest.json")
    day3(app["data"])
    e, log = now(env)  # rebuilds the manifest from the archives' headers, then goes on
    assert e["kind"] == "incremental" and e["parent"]["filename"] == es[-1]["filename"], log
    got = {x["filename"]: (x.get("kind"), x.get("parent"), x.get("full")) for x in daily(app["backups"])}
    assert {k: v for k, v in got.items() if k in want} == want


def test_a_hostile_chain_header_makes_a_broken_link_never_a_full(app: dict[str, Any]) -> None:
    """The header is untrusted: a malformed ``chain`` of an incremental gives parent None (chain
    broken), never a full (which a restore would extract alone, as if it were the whole tree)."""
    from gofrtest import craft_archive, tinfo

    from gofr_common.backup.manifest import chain_fields

    assert chain_fields(
        {"kind": "incremental", "chain": {"parent": {"filename": "../x", "sha256": "00"}}}
    ) == {
        "kind": "incremental",
        "parent": None,
        "full": None,
    }
    assert chain_fields({"kind": ["full"]})["kind"] == "incremental"
    assert chain_fields({"kind": "full", "chain": "x"}) == {"kind": "full", "parent": None, "full": None}
    assert chain_fields({}) == {}
    env = inc_env(app)
    now(env)
    name = "gofr-plot_daily_20990101_020000.tar.gz"
    craft_archive(
        app["backups"] / "daily" / name,
        [tinfo("storage/x.txt")],
        meta_extra={
            "kind": "incremental",
            "chain": {"parent": "nope", "full": 3},
            "created": "2099-01-01T02:00:00+00:00",
        },
    )
    os.unlink(app["backups"] / "manifest.json")
    js = {e["filename"]: e for e in json.loads(run_cli("list", "--json", env=env).stdout)["backups"]}
    assert js[name]["kind"] == "incremental" and js[name]["parent"] is None
    assert "parent is not recorded" in js[name]["chain_broken"]
    e, log = now(env)
    assert e["kind"] == "full" and f"the chain of {name} is broken" in log


def test_scheduled_days_fulls_for_full_every_and_for_tier_copies(tmp_path: Path) -> None:
    """The service's own runs over ten simulated days (FULL_EVERY=3d, weekly copies on): a full
    starts each chain when its full is 3 days old and whenever a weekly copy is due (a new ISO
    week), incrementals otherwise; the weekly tier holds copies of fulls only."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "f.txt", "day 0")
    env = {
        "GOFR_PROJECT": "sim",
        "GOFR_SIM_BACKUP_DATA_DIR": str(data),
        "GOFR_SIM_BACKUP_DIR": str(backups),
        "GOFR_SIM_BACKUP_PATHS": "storage:storage",
        "GOFR_SIM_BACKUP_REPORT_FILE": "off",
        "GOFR_SIM_BACKUP_MODE": "incremental",
        "GOFR_SIM_BACKUP_FULL_EVERY": "3d",
        "GOFR_SIM_BACKUP_ENABLE_WEEKLY": "true",
        "GOFR_SIM_BACKUP_DRILL_SCHEDULE": "",
    }
    cfg = BackupConfig.from_env(env=env)
    start = datetime(2026, 1, 7, 2, 0, tzinfo=UTC)  # a Wednesday
    clock = SimClock(start)
    svc = BackupService(cfg, clock=clock)  # type: ignore[arg-type]
    kinds = []
    for day in range(10):
        clock.t = start + timedelta(days=day)
        write(data / "storage" / f"d{day}.txt", f"day {day}")
        out = svc.run_backup("daily", trigger="schedule")
        assert out.status == "ok", out.error
        assert out.entry is not None
        kinds.append(out.entry["kind"][0].upper())
        if out.entry["kind"] == "incremental":
            assert out.tier_copies == []
    # Wed full (first), Thu, Fri, Sat full (3d), Sun, Mon full (weekly due), Tue, Wed, Thu full (3d), Fri
    assert "".join(kinds) == "FIIFIFIIFI"
    es = {e["filename"]: e for e in json.loads((backups / "manifest.json").read_text())["backups"]}
    weekly = [e for e in es.values() if e["tier"] == "weekly"]
    assert len(weekly) == 2
    for w in weekly:
        d = es[w["filename"].replace("_weekly_", "_daily_")]
        assert d["kind"] == "full" and w.get("kind") == "full"
        assert os.path.samefile(backups / d["path"], backups / w["path"])
    assert not list((backups / "weekly").glob("*.snap"))


# -- a property: random days of changes, each backed up by the run, restored by GNU tar ----------------
_NAMES = st.sampled_from(["a", "b", "c d", "é", "nl\nx"])
_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["add", "modify", "chmod", "delete", "rename", "mkdir", "rmdir", "symlink", "retype"]
        ),
        _NAMES,
        _NAMES,
    ),
    min_size=1,
    max_size=6,
)


def _apply(root: Path, op: str, x: str, y: str) -> None:
    """One change under ``root`` (names may hit a file, a directory or nothing: all are fine)."""
    a, b = root / x, root / "sub" / y
    if op == "add":
        at = b if os.path.isdir(b.parent) else a
        if os.path.islink(at):  # a symlink there (maybe to itself): the new file replaces it
            os.unlink(at)
        elif os.path.isdir(at):  # a name an earlier op made a directory (retype): add inside it
            at = at / "added"
        write(at, f"{op} {x} {y} {time.monotonic_ns()}")
    elif op == "modify" and a.is_file() and not a.is_symlink():
        with open(a, "a") as f:
            f.write("more")
    elif op == "chmod" and a.exists() and not a.is_symlink():
        os.chmod(a, 0o600 if a.stat().st_mode & 0o044 else 0o644)
    elif op == "delete" and (a.is_file() or a.is_symlink()):
        os.unlink(a)
    elif op == "rename" and os.path.lexists(a) and not os.path.lexists(b) and os.path.isdir(b.parent):
        os.rename(a, b)
    elif op == "mkdir" and not os.path.lexists(root / "sub"):
        (root / "sub").mkdir()
    elif op == "rmdir" and (root / "sub").is_dir() and not (root / "sub").is_symlink():
        shutil.rmtree(root / "sub")
    elif op == "symlink" and not os.path.lexists(a):
        os.symlink(y, a)
    elif op == "retype" and os.path.lexists(a) and not a.is_dir():
        os.unlink(a)
        a.mkdir()
        write(a / "inner", "was a file")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(days=st.lists(_OPS, min_size=1, max_size=3))
@example(days=[[("rmdir", "a", "a"), ("retype", "a", "a"), ("add", "a", "a")]])  # add into a retyped name
@example(days=[[("rmdir", "a", "a"), ("symlink", "b", "b"), ("add", "b", "a")]])  # add over a self-link
def test_property_the_runs_chain_restored_by_gnu_tar_equals_each_day(
    days: list[list[tuple[str, str, str]]],
) -> None:
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        data, backups = tmp / "data", tmp / "backups"
        write(data / "storage" / "a", "first")
        write(data / "storage" / "keep", "no op names it: the data never looks emptied")
        (data / "storage" / "sub").mkdir()
        write(data / "storage" / "sub" / "b", "second")
        env = {
            "GOFR_PROJECT": "prop",
            "GOFR_PROP_BACKUP_DATA_DIR": str(data),
            "GOFR_PROP_BACKUP_DIR": str(backups),
            "GOFR_PROP_BACKUP_PATHS": "storage:storage",
            "GOFR_PROP_BACKUP_REPORT_FILE": "off",
            "GOFR_PROP_BACKUP_MODE": "incremental",
            "GOFR_PROP_BACKUP_COMPRESSION_LEVEL": "1",
        }
        svc = BackupService(BackupConfig.from_env(env=env))
        chain: list[Path] = []
        for ops in [[], *days]:
            for op in ops:
                _apply(data / "storage", *op)
            out = svc.run_backup("daily", trigger="manual")
            assert out.status == "ok", out.error
            assert out.entry is not None and out.path is not None
            assert out.entry["kind"] == ("incremental" if chain else "full")
            chain.append(out.path)
            into = tmp / "gnu"
            gnu_restore(chain, into)
            assert snapshot(into / "storage", OWNERS) == snapshot(data / "storage", OWNERS), ops


def test_the_space_check_takes_its_ratio_from_fulls_not_from_a_tiny_incremental(tmp_path: Path) -> None:
    """An incremental that stored one byte is ~1.5 KB of headers: its size/data ratio (~1500) would
    make the next run's space check ask for 1500x the data and refuse every backup after a quiet
    day. The ratio comes from the newest full."""
    from gofrtest import tmpfs

    data = tmp_path / "data"
    write(data / "storage" / "big.bin", os.urandom(2 << 20))  # incompressible: a full is ~2 MB
    write(data / "storage" / "tiny.txt", "a")
    with tmpfs(tmp_path / "backups", "size=8m") as backups:
        env = cli_env(
            data, backups, GOFR_PLOT_BACKUP_PATHS="storage:storage", GOFR_PLOT_BACKUP_MODE="incremental"
        )
        assert now(env)[0]["kind"] == "full"
        write(data / "storage" / "tiny.txt", "b")
        inc, _ = now(env)
        assert inc["kind"] == "incremental" and inc["source_bytes"] == 1
        write(data / "storage" / "tiny.txt", "c")
        r = run_cli("now", "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["kind"] == "incremental"


@pytest.mark.parametrize("how", ["failed verification", "failed its restore drill"])
def test_a_newest_archive_known_bad_is_never_built_on(app: dict[str, Any], how: str) -> None:
    env = inc_env(app)
    _full, inc1 = now(env)[0], None
    day1(app["data"])
    inc1 = now(env)[0]
    if how == "failed verification":
        flip(app["backups"] / inc1["path"])
        assert run_cli("verify", inc1["filename"], env=env).returncode != 0
    else:
        doc = json.loads((app["backups"] / "manifest.json").read_text())
        for e in doc["backups"]:
            if e["filename"] == inc1["filename"]:
                e["drill"] = {"at": inc1["created"], "ok": False, "error": "the probe failed"}
        (app["backups"] / "manifest.json").write_text(json.dumps(doc))
    day2(app["data"])
    e, log = now(env)
    assert e["kind"] == "full", log
    assert f"full: the newest archive {inc1['filename']} {how}" in log
    assert_chain_restores_today(app, e)
