"""Restore drills (issue 14): real archives made by `gofr-backup now`, restored by the real restore
engine into the scratch dir, real SQLite corruption, real probes, real SIGKILL. Nothing is mocked."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3
from gofrtest import (
    Members,
    cli_env,
    craft_archive,
    manifest,
    needs,
    popen_cli,
    rewrite_archive,
    run_cli,
    tinfo,
    write,
)

from gofr_common.backup.archive_format import INDEX_NAME, index_line, parse_index_line, read_index

PATHS = "storage:storage,auth:auth"


def state(backups: Path) -> dict[str, Any]:
    return json.loads((backups / ".gofr-plot.state.json").read_text())


def make_db(path: Path, rows: int = 3000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("create table t(id integer primary key, v text)")
    db.execute("create index iv on t(v)")
    db.executemany("insert into t(v) values (?)", [(f"value-{i:06d}" * 3,) for i in range(rows)])
    db.commit()
    db.close()


def setup_app(tmp: Path, **extra: str) -> tuple[Path, Path, dict[str, str]]:
    data, backups = tmp / "data", tmp / "backups"
    t0 = 1_700_000_000
    write(data / "storage" / "doc.json", json.dumps({"id": 1}), mtime=t0)
    write(data / "storage" / "deep" / "blob.bin", os.urandom(300_000), mtime=t0)
    write(data / "storage" / "odd\\name\nwith newline.txt", "escaped in the index", mtime=t0)
    make_db(data / "storage" / "app.db")
    write(data / "auth" / "tokens.json", '{"t": "secret"}', 0o600, t0)
    os.link(data / "storage" / "deep" / "blob.bin", data / "storage" / "blob-link.bin")
    os.symlink("doc.json", data / "storage" / "doc-link")
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": PATHS, **extra})
    r = run_cli("now", env=env)
    assert r.returncode == 0, r.stderr
    return data, backups, env


def the_archive(backups: Path) -> Path:
    return next(p for p in (backups / "daily").glob("*.tar.gz"))


def test_a_good_archive_drills_ok(tmp_path: Path) -> None:
    data, backups, env = setup_app(tmp_path, **{"GOFR_{P}_BACKUP_DRILL_JSON_GLOB": "*.json"})
    r = run_cli("drill", "--latest", "--json", env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["ok"] is True and d["error"] is None
    [e] = manifest(backups)
    assert d["files"] == e["file_count"] and d["bytes"] == e["source_bytes"]
    # every regular file name (the hard link too) was hashed; the database checked; both JSON files
    assert d["checks"]["hashes"] == 6 and d["checks"]["sqlite"] == 1 and d["checks"]["json"] == 2
    assert d["restore_seconds"] > 0 and d["seconds"] >= d["restore_seconds"]
    # recorded in the manifest entry and the state file, the same dict
    assert e["drill"] == d and state(backups)["last_drill"] == d
    assert "drill_running" not in state(backups)
    # the scratch dir is gone; the live data was not touched
    assert not (backups / ".gofr-plot.drill").exists()
    r = run_cli("list", env=env)
    assert "drill ok" in r.stdout
    r = run_cli("status", "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["last_drill"]["ok"] is True


def test_the_index_is_in_the_archive_and_checks_a_plain_tar_extraction(tmp_path: Path) -> None:
    """Plain GNU tar reads the archive; the index lists every regular file (the hard link too) with
    the BLAKE3 of what was archived, `b3sum -c` style (names with a backslash or newline escaped)."""
    data, backups, env = setup_app(tmp_path)
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(the_archive(backups)), "-C", str(out)], check=True)
    with open(out / INDEX_NAME, "rb") as f:
        entries = list(read_index(f))
    names = {n for n, _ in entries}
    assert names == {
        "storage/doc.json",
        "storage/deep/blob.bin",
        "storage/blob-link.bin",
        "storage/odd\\name\nwith newline.txt",
        "storage/app.db",
        "auth/tokens.json",
    }
    for name, digest in entries:
        assert blake3((out / name).read_bytes()).hexdigest() == digest, name
    end = json.loads((out / ".gofr-backup-end.json").read_text())
    assert end["index_entries"] == 6 and end["index_hash"] == "blake3"
    raw = (out / INDEX_NAME).read_bytes()
    assert raw.count(b"\n") == 6 and b"\\" + b"0" * 0 in raw  # one line per file, newline escaped
    assert parse_index_line(index_line("a\\b\nc", "f" * 64)[:-1]) == ("a\\b\nc", "f" * 64)
    # verify counts data members only (not the index)
    r = run_cli("verify", "--latest", "--json", env=env)
    assert (
        r.returncode == 0
        and json.loads(r.stdout)["results"][0]["file_count"] == manifest(backups)[0]["file_count"]
    )


def _resign(archive: Path, backups: Path, replace: dict[str, bytes], index_too: bool = True) -> None:
    """Rewrite the archive with ``replace``d member contents (and, ``index_too``, an index that
    agrees with them), then re-sign it."""
    new_hash = {n: blake3(b).hexdigest() for n, b in replace.items()} if index_too else {}

    def edit(members: Members) -> Members:
        out: Members = []
        for m, data in members:
            if m.name in replace:
                data = replace[m.name]
            elif m.name == INDEX_NAME and new_hash:
                assert data is not None
                data = b"".join(index_line(n, new_hash.get(n, d)) for n, d in read_index(io.BytesIO(data)))
            out.append((m, data))
        return out

    rewrite_archive(archive, backups, edit)


def _corrupt_a_table_page(db: bytes) -> bytes:
    """Point the first cell of a table leaf page (type 13, past the schema) outside the page: the
    file still opens, and PRAGMA integrity_check finds it."""
    data = bytearray(db)
    ps = int.from_bytes(data[16:18], "big")
    ps = 65536 if ps == 1 else ps
    page = next(p for p in range(3, len(data) // ps) if data[p * ps] == 13)
    data[page * ps + 8 : page * ps + 10] = (5).to_bytes(2, "big")
    return bytes(data)


def test_a_corrupted_and_re_signed_sqlite_member_fails_the_drill_on_integrity_check(tmp_path: Path) -> None:
    data, backups, env = setup_app(tmp_path)
    archive = the_archive(backups)
    with tarfile.open(archive, "r:gz") as tar:
        db = tar.extractfile("storage/app.db").read()  # type: ignore[union-attr]
    bad = _corrupt_a_table_page(db)
    assert len(bad) == len(db) and bad != db
    _resign(archive, backups, {"storage/app.db": bad})
    r = run_cli("verify", "--latest", env=env)
    assert r.returncode == 0, r.stdout + r.stderr  # every checksum agrees: verify cannot tell
    r = run_cli("drill", "--latest", "--json", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    d = json.loads(r.stdout)
    assert d["ok"] is False
    assert "storage/app.db: SQLite PRAGMA integrity_check failed" in d["error"], d["error"]
    assert "\n" not in d["error"]
    assert d["checks"]["hashes"] == 6  # the hashes agreed: only the database check could tell
    assert state(backups)["last_drill"]["ok"] is False
    r = run_cli("status", env=env)
    assert r.returncode == 1 and "the last restore drill" in r.stdout and "integrity_check" in r.stdout
    assert not (backups / ".gofr-plot.drill").exists()


def test_a_changed_member_fails_the_drill_on_its_hash(tmp_path: Path) -> None:
    """A member whose content no longer matches the index (the archive re-signed, the index not)."""
    data, backups, env = setup_app(tmp_path)
    archive = the_archive(backups)
    _resign(archive, backups, {"auth/tokens.json": b'{"t": "SECRET"}'}, index_too=False)
    why = "1 member(s) differ from the archive's own record of their content (BLAKE3): auth/tokens.json"
    r = run_cli("verify", "--latest", env=env)
    assert r.returncode == 1 and why in r.stdout, r.stdout
    r = run_cli("drill", archive.name, env=env)  # (by name: verify marked it failed, --latest skips it)
    assert r.returncode == 1
    assert why in r.stdout, r.stdout


def test_a_probe_that_exits_1_fails_the_drill(tmp_path: Path) -> None:
    mark = tmp_path / "probe-saw"
    probe = f'ls "$GOFR_DRILL_DIR/storage" > {mark}; test -f storage/nope.db || {{ echo "no nope.db" >&2; exit 1; }}'
    data, backups, env = setup_app(tmp_path, **{"GOFR_{P}_BACKUP_DRILL_COMMAND": probe})
    r = run_cli("drill", "--json", env=env)
    assert r.returncode == 1
    d = json.loads(r.stdout)
    assert d["ok"] is False
    assert d["error"] == "the drill probe (DRILL_COMMAND) exited with status 1: no nope.db"
    assert d["checks"]["probe"]["exit"] == 1
    assert "app.db" in mark.read_text()  # it ran against the restored copy, from the scratch dir
    # a probe that passes: the drill passes
    env["GOFR_PLOT_BACKUP_DRILL_COMMAND"] = (
        'sqlite3 --version >/dev/null 2>&1; test -s "$GOFR_DRILL_DIR/storage/app.db"'
    )
    r = run_cli("drill", env=env)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_probe_that_hangs_is_killed_with_its_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    probe = f"sleep 300 & echo $! > {pidfile}; wait"
    data, backups, env = setup_app(
        tmp_path, **{"GOFR_{P}_BACKUP_DRILL_COMMAND": probe, "GOFR_{P}_BACKUP_DRILL_TIMEOUT": "2"}
    )
    t0 = time.monotonic()
    r = run_cli("drill", env=env)
    took = time.monotonic() - t0
    assert r.returncode == 1
    assert "timed out after 2s (DRILL_TIMEOUT) and was killed" in r.stdout
    assert took < 30, took
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not (backups / ".gofr-plot.drill").exists()


def test_a_probe_that_prints_megabytes_costs_no_memory(tmp_path: Path) -> None:
    data, backups, env = setup_app(
        tmp_path,
        **{"GOFR_{P}_BACKUP_DRILL_COMMAND": "head -c 300000000 /dev/zero | tr '\\0' x; echo; echo done"},
    )
    p = popen_cli("drill", "--json", env=env)
    got: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda k=k: got.__setitem__(k, getattr(p, k).read()))  # type: ignore[misc]
        for k in ("stdout", "stderr")
    ]
    for t in readers:
        t.start()
    # the peak of the drill's own memory (VmHWM of its process after exec): ru_maxrss would also
    # count the forked copy of this pytest worker before exec (275 MB in a busy xdist worker)
    peak_kb = 0
    while p.poll() is None:
        try:
            status = Path(f"/proc/{p.pid}/status").read_text()
            peak_kb = max(peak_kb, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.02)
    for t in readers:
        t.join(120)
    assert p.returncode == 0, got.get("stderr")
    d = json.loads(got["stdout"])
    assert d["checks"]["probe"]["output"][-1] == "done"
    assert 0 < peak_kb / 1024 < 150, peak_kb  # 300 MB of output, kept: its last 64 KiB


def _drill_in_its_probe(tmp_path: Path) -> tuple[Path, dict[str, str], subprocess.Popen[str], Path]:
    """A real drill, stopped in its probe (restored, probing): (backups, env, the drill, the file
    that holds the probe's pid)."""
    mark = tmp_path / "probe.pid"
    data, backups, env = setup_app(
        tmp_path,
        **{"GOFR_{P}_BACKUP_DRILL_COMMAND": f"echo $$ > {mark}.tmp; mv {mark}.tmp {mark}; sleep 120"},
    )
    p = popen_cli("drill", env=env)
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return backups, env, p, mark


def _kill_a_drill_midway(tmp_path: Path) -> tuple[Path, dict[str, str], int]:
    """A real drill, SIGKILLed while its probe runs: (backups, env, the probe's pid)."""
    backups, env, p, mark = _drill_in_its_probe(tmp_path)
    assert (backups / ".gofr-plot.drill" / "storage" / "app.db").exists()  # mid-way: restored, probing
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    return backups, env, int(mark.read_text())


def _gone(pid: int) -> bool:
    try:
        return "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return True


def test_a_drill_killed_midway_leaves_nothing_after_the_next_run(tmp_path: Path) -> None:
    backups, env, probe = _kill_a_drill_midway(tmp_path)
    scratch = backups / ".gofr-plot.drill"
    assert Path(f"/proc/{probe}").exists()  # the probe outlived the drill
    # status says the drill did not finish (it has not passed)
    r = run_cli("status", env=env)
    assert r.returncode == 1 and "did not finish" in r.stdout, r.stdout
    # the next run (a backup here) removes the scratch dir and the probe
    r = run_cli("now", env=env)
    assert r.returncode == 0, r.stderr
    assert "left by a restore drill that did not finish" in r.stderr
    assert not scratch.exists()
    time.sleep(0.2)
    assert _gone(probe)
    # still unhealthy: no drill has passed since; the next drill passes and clears it
    assert run_cli("status", env=env).returncode == 1
    env["GOFR_PLOT_BACKUP_DRILL_COMMAND"] = "true"
    assert run_cli("drill", env=env).returncode == 0
    assert run_cli("status", env=env).returncode == 0
    assert sorted(os.listdir(backups)) == sorted(
        [
            ".gofr-plot.drill.lock",
            ".gofr-plot.lock",
            ".gofr-plot.state.json",
            ".gofr-plot.state.json.lock",
            ".manifest.lock",
            "daily",
            "manifest.json",
            "report.html",
        ]
    )


def test_the_service_records_a_drill_that_died_as_failed(tmp_path: Path) -> None:
    """So that a drill that kills the service (out of memory) is said, not run again and again."""
    from datetime import UTC, datetime, timedelta

    from gofrtest import SimClock

    from gofr_common.backup import BackupConfig, BackupService

    backups, env, probe = _kill_a_drill_midway(tmp_path)
    env["GOFR_PLOT_BACKUP_REPORT_FILE"] = "off"
    t0 = datetime.now(UTC)
    svc = BackupService(BackupConfig.from_env(env=env), clock=SimClock(t0, t0 + timedelta(minutes=1)))  # type: ignore[arg-type]
    svc.start()
    st = state(backups)
    assert "drill_running" not in st
    assert st["last_drill"]["ok"] is False and "did not finish" in st["last_drill"]["error"]
    assert not (backups / ".gofr-plot.drill").exists()
    time.sleep(0.2)
    assert _gone(probe)
    r = run_cli("status", env=env)
    assert r.returncode == 1 and "the last restore drill" in r.stdout and "did not finish" in r.stdout


def test_an_archive_from_before_the_index_drills_on_count_and_bytes(tmp_path: Path) -> None:
    """Format 1 (no per-file hashes): it still drills, and says what was not checked."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    data.mkdir()
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})
    craft_archive(
        backups / "daily" / "gofr-plot_daily_20260101_020000.tar.gz",
        [
            tinfo("storage", tarfile.DIRTYPE),
            tinfo("storage/a.txt", data=b"hello"),
            tinfo("storage/b.json", data=b"{"),
        ],
    )
    r = run_cli("drill", "gofr-plot_daily_20260101_020000.tar.gz", "--json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(r.stdout)
    assert d["ok"] and d["files"] == 3 and d["checks"]["hashes"] is None
    assert any("predates per-file hashes" in n for n in d["notes"])
    # its JSON check still runs where asked
    env["GOFR_PLOT_BACKUP_DRILL_JSON_GLOB"] = "storage/*.json"
    d = json.loads(run_cli("drill", "--latest", "--json", env=env).stdout)
    assert d["ok"] is False and "1 JSON file(s) do not parse: storage/b.json" in d["error"]


def test_an_encrypted_archive_needs_an_identity(tmp_path: Path) -> None:
    import pyrage

    ident = pyrage.x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(str(ident) + "\n")
    data, backups, env = setup_app(
        tmp_path,
        **{
            "GOFR_{P}_BACKUP_ENCRYPT_RECIPIENTS": str(ident.to_public()),
            "GOFR_{P}_BACKUP_ENCRYPT_LOCAL": "true",
        },
    )
    before = (backups / "manifest.json").read_bytes()
    r = run_cli("drill", env=env)
    assert r.returncode == 2, r.stderr
    assert "is encrypted (age) and no identity is configured" in r.stderr and "Traceback" not in r.stderr
    assert (backups / "manifest.json").read_bytes() == before  # nothing recorded
    r = run_cli("drill", "--identity", str(key), "--json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["checks"]["hashes"] == 6
    # the service records a drill it cannot make as a failed drill: status says why
    from gofr_common.backup import BackupConfig, BackupService

    env.pop("GOFR_PLOT_BACKUP_IDENTITY_FILE", None)
    svc = BackupService(BackupConfig.from_env(env=env))
    res = svc.scheduled_drill()
    assert res is not None and res.ok is False and "IDENTITY_FILE" in (res.error or "")
    r = run_cli("status", env=env)
    assert r.returncode == 1 and "no identity is configured" in r.stdout


def test_drill_dir_inside_the_data_dir_is_refused(tmp_path: Path) -> None:
    data, backups, env = setup_app(tmp_path)
    for bad in (str(data / "scratch"), str(data), str(data / "storage")):
        env["GOFR_PLOT_BACKUP_DRILL_DIR"] = bad
        r = run_cli("drill", env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.count("\n") == 1 and "DRILL_DIR" in r.stderr and "overlaps" in r.stderr, r.stderr
    assert not (data / "scratch").exists()


def test_drill_dir_elsewhere_and_a_full_one(tmp_path: Path) -> None:
    data, backups, env = setup_app(tmp_path)
    elsewhere = tmp_path / "scratch"
    elsewhere.mkdir()  # a DRILL_DIR must exist (a tmpfs or a volume): none is made
    env["GOFR_PLOT_BACKUP_DRILL_DIR"] = str(elsewhere)
    assert run_cli("drill", env=env).returncode == 0
    assert os.listdir(elsewhere) == []  # only our own .gofr-plot.drill was made, and removed
    needs(os.geteuid() == 0, "root (mount a small tmpfs)")
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)]).returncode != 0:
        needs(False, "mount -t tmpfs")
    try:
        env["GOFR_PLOT_BACKUP_DRILL_DIR"] = str(small)
        r = run_cli("drill", "--json", env=env)
        assert r.returncode == 1
        d = json.loads(r.stdout)
        assert d["error"].startswith(f"not enough space for a drill in {small}")
        assert d["restore_seconds"] is None  # refused before anything was restored
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)])


def test_status_wants_a_drill_within_two_intervals(tmp_path: Path) -> None:
    data, backups, env = setup_app(tmp_path, **{"GOFR_{P}_BACKUP_DRILL_SCHEDULE": "0 3 * * *"})
    st = state(backups)
    st["started_at"] = "2020-01-01T00:00:00+00:00"  # the service has run for years
    (backups / ".gofr-plot.state.json").write_text(json.dumps(st))
    r = run_cli("status", env=env)
    assert r.returncode == 1 and "no restore drill has passed" in r.stdout
    assert run_cli("drill", env=env).returncode == 0
    assert run_cli("status", env=env).returncode == 0
    st = state(backups)
    st["last_drill"]["at"] = "2020-01-02T00:00:00+00:00"  # the last drill that passed is old
    doc = json.loads((backups / "manifest.json").read_text())
    doc["backups"][0]["drill"]["at"] = "2020-01-02T00:00:00+00:00"
    (backups / "manifest.json").write_text(json.dumps(doc))
    (backups / ".gofr-plot.state.json").write_text(json.dumps(st))
    r = run_cli("status", env=env)
    assert r.returncode == 1 and "no restore drill has passed for" in r.stdout
    # no drill schedule: no drill is wanted
    env["GOFR_PLOT_BACKUP_DRILL_SCHEDULE"] = ""
    assert run_cli("status", env=env).returncode == 0


@pytest.mark.parametrize(
    "var,value,needle",
    [
        ("DRILL_SCHEDULE", "0 3 * *", "5 cron fields"),
        ("DRILL_TIMEOUT", "0", "greater than 0"),
        ("DRILL_JSON_GLOB", "a[b", "unclosed"),
        ("SPOT_CHECK_SAMPLE", "200", "percentage from 0 to 100"),
        ("SPOT_CHECK_TOLERANCE", "-1", "percentage from 0 to 100"),
        ("SPOT_CHECK_RATE", "0", "MB per second"),
        ("SPOT_CHECK_AFTER_BACKUP", "maybe", "true/false"),
    ],
)
def test_bad_drill_and_spot_check_variables(tmp_path: Path, var: str, value: str, needle: str) -> None:
    env = cli_env(tmp_path / "d", tmp_path / "b", **{f"GOFR_{{P}}_BACKUP_{var}": value})
    for cmd in (["config"], ["drill"], ["check-source"]):
        r = run_cli(*cmd, env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and f"GOFR_PLOT_BACKUP_{var}" in r.stderr and needle in r.stderr
    assert not (tmp_path / "b").exists()


def test_the_service_drills_on_its_own_schedule(tmp_path: Path) -> None:
    """Simulated weeks (an injected clock): a drill at each DRILL_SCHEDULE time, of the newest
    archive; when both schedules fire at one instant, the backup goes first and the drill restores it."""
    from datetime import UTC, datetime, timedelta

    from gofrtest import SimClock

    from gofr_common.backup import BackupConfig, BackupService

    data = tmp_path / "data"
    write(data / "storage" / "f.txt", "hello", mtime=1_700_000_000)
    for label, drill_schedule, days, want in (
        ("weekly", "30 2 * * 0", 16, ["2026-05-03T02:30:00+00:00", "2026-05-10T02:30:00+00:00"]),
        ("tie", "0 2 * * *", 2, ["2026-05-01T02:00:00+00:00", "2026-05-02T02:00:00+00:00"]),
    ):
        backups = tmp_path / label
        env = {
            "GOFR_PROJECT": "plot",
            "GOFR_PLOT_BACKUP_DATA_DIR": str(data),
            "GOFR_PLOT_BACKUP_DIR": str(backups),
            "GOFR_PLOT_BACKUP_PATHS": "storage:storage",
            "GOFR_PLOT_BACKUP_DRILL_SCHEDULE": drill_schedule,
            "GOFR_PLOT_BACKUP_REPORT_FILE": "off",
            "GOFR_PLOT_BACKUP_RETENTION_DAYS": "9999",
            "GOFR_PLOT_BACKUP_MAX_COUNT": "9999",
        }
        t0 = datetime(2026, 5, 1, 1, 0, tzinfo=UTC)  # a Friday
        clock = SimClock(t0, t0 + timedelta(days=days))
        BackupService(BackupConfig.from_env(env=env), clock=clock).start()  # type: ignore[arg-type]
        es = sorted(
            json.loads((backups / "manifest.json").read_text())["backups"], key=lambda e: e["created"]
        )
        drilled = [(e["created"], e["drill"]["at"]) for e in es if "drill" in e]
        assert [at for _, at in drilled] == want, (label, drilled)
        for created, at in drilled:  # each drill restored the newest archive of its moment
            assert created == max(e["created"] for e in es if e["created"] <= at)
        assert all(e["drill"]["ok"] for e in es if "drill" in e)
        assert state(backups)["last_drill"]["at"] == want[-1]
        assert len([e for e in es if e["tier"] == "daily"]) == days + 1  # catch-up, then one a day


def test_sigterm_stops_a_drill_cleanly(tmp_path: Path) -> None:
    backups, env, p, mark = _drill_in_its_probe(tmp_path)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1 and "interrupted" in err and "Traceback" not in err, err
    assert time.monotonic() - t0 < 10
    assert _gone(int(mark.read_text()))
    assert not (backups / ".gofr-plot.drill").exists()
    st = state(backups)
    assert "last_drill" not in st and "drill_running" not in st  # nothing recorded, nothing pending
    assert run_cli("status", env=env).returncode == 0


def _one_line_refusal(r: Any, *needles: str) -> None:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and all(n in r.stderr for n in needles), r.stderr


def test_a_drill_dir_that_reaches_live_data_through_a_link_is_refused(tmp_path: Path) -> None:
    """The scratch dir is removed by every drill (and by a backup after a killed drill): found by a
    new user, a DRILL_DIR that was a symlink to the data dir, or whose scratch dir was a backed-up
    path, let a drill and even `now` delete live data."""
    data, backups, env = setup_app(tmp_path)
    precious = write(data / ".gofr-plot.drill" / "appfile", "precious")
    os.symlink(data, tmp_path / "datalink")
    other = tmp_path / "other"
    write(other / ".gofr-plot.drill" / "kept.txt", "backed up")
    cases = [
        ({"GOFR_PLOT_BACKUP_DRILL_DIR": str(tmp_path / "datalink")}, "overlaps the data directory"),
        (
            {
                "GOFR_PLOT_BACKUP_DRILL_DIR": str(other),
                "GOFR_PLOT_BACKUP_PATHS": f"{PATHS},x:{other / '.gofr-plot.drill'}",
            },
            "overlaps the path x",
        ),
        ({"GOFR_PLOT_BACKUP_PATHS": f"{PATHS},x:{backups / '.gofr-plot.drill'}"}, "is inside the backup"),
        ({"GOFR_PLOT_BACKUP_DRILL_DIR": "relative/dir"}, "expected an absolute path"),
        ({"GOFR_PLOT_BACKUP_DRILL_DIR": str(tmp_path / "no" / "such")}, "does not exist"),
    ]
    for extra, needle in cases:
        for cmd in ("config", "drill", "now"):
            _one_line_refusal(run_cli(cmd, env={**env, **extra}), needle)
    assert precious.read_text() == "precious" and (other / ".gofr-plot.drill" / "kept.txt").exists()
    assert not (tmp_path / "no").exists()


def test_drill_and_check_source_take_only_this_projects_archives(tmp_path: Path) -> None:
    data, backups, env = setup_app(tmp_path)
    before = (backups / ".gofr-plot.state.json").read_bytes()
    a = the_archive(backups)
    other = a.with_name(a.name.replace("gofr-plot_", "gofr-doc_"))
    other.write_bytes(a.read_bytes())
    for name in (other.name, str(other), "/etc/passwd", str(a) + ".sha256"):
        for cmd in ("drill", "check-source"):
            r = run_cli(cmd, name, env=env)
            assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert (backups / ".gofr-plot.state.json").read_bytes() == before  # nothing recorded


def test_what_the_probe_starts_in_a_session_of_its_own_is_killed(tmp_path: Path) -> None:
    mark = tmp_path / "stray.pid"
    data, backups, env = setup_app(
        tmp_path,
        **{
            "GOFR_{P}_BACKUP_DRILL_COMMAND": f"setsid sh -c 'echo $$ > {mark}; exec sleep 123' </dev/null >/dev/null 2>&1 & sleep 0.5"
        },
    )
    r = run_cli("drill", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert mark.exists()
    pid = int(mark.read_text())
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid), "the probe's setsid child outlived the drill"


def test_an_archive_that_failed_its_drill_is_not_restorable(tmp_path: Path) -> None:
    """`restore --latest` and `status` pass over an archive whose last drill failed, and `status`
    names it, even when a drill of an older archive passes afterwards."""
    data, backups, env = setup_app(tmp_path)
    older = the_archive(backups)
    time.sleep(1.1)
    assert run_cli("now", env=env).returncode == 0
    newer = max((backups / "daily").glob("*.tar.gz"))
    assert newer != older
    _resign(newer, backups, {"auth/tokens.json": b'{"t": "SECRET"}'}, index_too=False)
    assert run_cli("drill", newer.name, env=env).returncode == 1
    assert run_cli("drill", older.name, env=env).returncode == 0  # the last drill passed ...
    st = json.loads(run_cli("status", "--json", env=env).stdout)
    assert st["restorable"]["filename"] == older.name  # ... but the newest archive is not restorable
    r = run_cli("status", env=env)
    assert r.returncode == 1 and f"{newer.name} failed its restore drill" in r.stdout, r.stdout
    target = tmp_path / "copy"
    r = run_cli("restore", "--latest", "--target", str(target), "--yes", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert (target / "auth" / "tokens.json").read_text() == '{"t": "secret"}'


def test_a_drill_that_could_not_run_does_not_count_against_the_archive(tmp_path: Path) -> None:
    """A drill stopped by its own surroundings (not enough space in DRILL_DIR, a scratch dir it
    cannot make) says nothing about the archive: it was recorded as the archive failing its drill,
    and `restore --latest` then silently restored an older archive."""
    data, backups, env = setup_app(tmp_path)
    older = the_archive(backups)
    time.sleep(1.1)
    write(data / "storage" / "big.bin", os.urandom(600_000))
    assert run_cli("now", env=env).returncode == 0
    newer = max((backups / "daily").glob("*.tar.gz"))
    needs(os.geteuid() == 0, "root (mount small and read-only tmpfs)")
    small, ro = tmp_path / "small", tmp_path / "ro"
    for d, opts in ((small, "size=256k"), (ro, "ro,size=1m")):
        d.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)]).returncode != 0:
            needs(False, "mount -t tmpfs")
    try:
        for d, needle in ((small, "not enough space for a drill"), (ro, "scratch")):
            r = run_cli("drill", "--json", env={**env, "GOFR_PLOT_BACKUP_DRILL_DIR": str(d)})
            assert r.returncode == 1, r.stderr
            res = json.loads(r.stdout)
            assert res["ok"] is False and res["checked"] is False and needle in res["error"], res
            assert state(backups)["last_drill"]["checked"] is False
            e = next(x for x in manifest(backups) if x["filename"] == newer.name)
            assert "drill" not in e  # nothing recorded against the archive
            plan = json.loads(run_cli("restore", "--latest", "--dry-run", "--json", env=env).stdout)
            assert plan["archive"] == newer.name and plan["passed_over"] == []
            st = run_cli("status", env=env)
            assert "could not run" in st.stdout and "failed its restore drill" not in st.stdout, st.stdout
        out = run_cli("drill", env={**env, "GOFR_PLOT_BACKUP_DRILL_DIR": str(small)})
        assert "COULD NOT RUN" in out.stdout, out.stdout
    finally:
        for d in (small, ro):
            subprocess.run(["umount", str(d)])
    # a drill that ran and failed still counts against the archive
    assert run_cli("drill", env={**env, "GOFR_PLOT_BACKUP_DRILL_COMMAND": "exit 3"}).returncode == 1
    plan = json.loads(run_cli("restore", "--latest", "--dry-run", "--json", env=env).stdout)
    assert plan["archive"] == older.name and plan["passed_over"][0]["filename"] == newer.name
