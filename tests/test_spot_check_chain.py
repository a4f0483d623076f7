"""Source spot checks of incrementals (issue 17): `check-source` against an incremental compares the
live source with its chain's final tree (the last archive's GNU.dumpdir listings; each file's size,
mtime and BLAKE3 from the newest archive of the chain that stored it), not with that one archive,
which holds one day's changes; a broken chain fails the check naming the link; the check after a
scheduled incremental backup checks the final tree from the new archive's own verification pass.
Real CLI runs in incremental mode with real changes between them, real damage; nothing mocked."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from gofrtest import SimClock, cli_env, run_cli, write

from gofr_common.backup import BackupConfig, spot_check
from gofr_common.backup.manifest import Manifest
from gofr_common.backup.run import Run

T0 = 1_700_000_000  # well before any archive


def state(backups: Path) -> dict[str, Any]:
    return json.loads((backups / ".gofr-plot.state.json").read_text())


def entries(backups: Path) -> list[dict[str, Any]]:
    return json.loads((backups / "manifest.json").read_text())["backups"]


class Chain:
    """A data dir backed up by `gofr-backup now` in incremental mode: a full, then two incrementals
    over real changes (modify, add, delete, rename a directory); a SQLite database in WAL mode,
    open across the runs, whose files keep old mtimes."""

    def __init__(self, tmp: Path) -> None:
        self.data, self.backups = tmp / "data", tmp / "backups"
        s = self.s = self.data / "storage"
        for i in range(30):
            write(s / f"d{i % 3}" / f"f{i}.txt", f"file {i}\n" * (20 + i), mtime=T0)
        write(s / "gone.txt", "deleted on day 1\n", mtime=T0)
        write(s / "dir" / "inner.txt", "renamed with its directory on day 2\n", mtime=T0)
        write(self.data / "auth" / "tokens.json", '{"t": 1}', 0o600, T0)
        self.db = sqlite3.connect(s / "app.db")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("create table t(v text)")
        self.db.executemany("insert into t values (?)", [(f"v{i}" * 20,) for i in range(300)])
        self.db.commit()
        for f in s.glob("app.db*"):
            os.utime(f, (T0, T0))
        self.env = cli_env(
            self.data,
            self.backups,
            **{"GOFR_{P}_BACKUP_PATHS": "storage:storage,auth:auth", "GOFR_{P}_BACKUP_MODE": "incremental"},
        )
        self.runs: list[dict[str, Any]] = []

    def now(self) -> dict[str, Any]:
        r = run_cli("now", "--json", env=self.env)
        assert r.returncode == 0, r.stderr
        e = json.loads(r.stdout)
        self.runs.append(e)
        return e

    def days(self) -> list[dict[str, Any]]:
        s = self.s
        assert self.now()["kind"] == "full"
        write(s / "d0" / "f0.txt", "changed on day 1\n", mtime=T0 + 100)
        write(s / "new" / "a.txt", "added on day 1\n", mtime=T0 + 100)
        (s / "gone.txt").unlink()
        assert self.now()["kind"] == "incremental"
        os.rename(s / "dir", s / "dir2")
        write(s / "d1" / "f1.txt", "changed on day 2, longer than before\n" * 3, mtime=T0 + 200)
        assert self.now()["kind"] == "incremental"
        return self.runs

    def check(self, *args: str) -> tuple[int, dict[str, Any]]:
        r = run_cli("check-source", *args, "--json", env=self.env)
        assert r.returncode in (0, 1), r.stdout + r.stderr
        assert "Traceback" not in r.stderr, r.stderr
        return r.returncode, json.loads(r.stdout)


@pytest.fixture
def ch(tmp_path: Path) -> Iterator[Chain]:
    c = Chain(tmp_path)
    yield c
    c.db.close()


def old_entries(c: Chain, e: dict[str, Any]) -> int:
    """Source entries archive ``e`` must hold: mtime before it began, not a database's -wal/-shm."""
    created = datetime.fromisoformat(e["created"]).timestamp()
    n = 0
    for top in (c.s, c.data / "auth"):
        for p in [top, *top.rglob("*")]:
            if p.name.endswith(("-wal", "-shm")):
                continue
            n += os.lstat(p).st_mtime < created
    return n


def test_check_source_of_the_newest_incremental_passes_on_the_untouched_source(ch: Chain) -> None:
    """The main case: on h17-int every file the last incremental did not store read as missing."""
    full, inc1, inc2 = ch.days()
    code, d = ch.check("--sample", "100")
    assert code == 0, d
    assert d["archive"] == inc2["filename"] and d["ok"] is True
    assert d["missing"] == 0 and d["drift"] == 0 and d["size_drift"] == 0, d
    assert d["files"] == old_entries(ch, inc2) and d["files"] > 30
    # every regular file but the database (a snapshot, not its bytes) is re-read and compared, those
    # stored by the full alone included: their hashes come from the full's index
    regular = sum(1 for p in ch.data.rglob("*.txt")) + 1  # and tokens.json
    assert d["sampled"] == regular, d
    assert any(f"chain of 3 archive(s) ({full['filename']}, then" in n for n in d["notes"]), d["notes"]
    assert state(ch.backups)["last_spot_check"] == d
    assert [e.get("spot_check", {}).get("ok") for e in entries(ch.backups)] == [None, None, True]
    # a middle archive is checked against its own restore point (the renamed directory's old name)
    code, d = ch.check(inc1["filename"], "--sample", "100")
    assert code == 1 and d["missing"] == 2, d
    assert sorted(d["missing_paths"]) == [str(ch.s / "dir2"), str(ch.s / "dir2" / "inner.txt")], d
    # the full is checked as in full mode, alone
    code, d = ch.check(full["filename"])
    assert code == 1 and str(ch.s / "new" / "a.txt") in d["missing_paths"], d


def test_a_file_the_chain_deleted_that_comes_back_with_an_old_mtime_is_missing(ch: Chain) -> None:
    """gone.txt is in the full but deleted by day 1's listing: the final tree lacks it, so a copy
    put back with its old mtime (a `cp -p` from elsewhere) is reported, as a full's check would."""
    ch.days()
    write(ch.s / "gone.txt", "deleted on day 1\n", mtime=T0)
    code, d = ch.check()
    assert code == 1, d
    assert d["missing"] == 1 and d["missing_paths"] == [str(ch.s / "gone.txt")], d
    assert d["error"].startswith("1 of ") and "missing from it" in d["error"]


def test_a_file_missing_from_the_backup_is_missing(ch: Chain) -> None:
    ch.days()
    late = write(ch.s / "d2" / "late-but-old.txt", "the backup never saw me", mtime=T0)
    write(ch.s / "d2" / "new.txt", "new since the backup: not expected")  # mtime now
    code, d = ch.check()
    assert code == 1 and d["missing"] == 1 and d["missing_paths"] == [str(late)], d
    assert d["newer"] >= 1
    r = run_cli("status", env=ch.env)
    assert r.returncode == 1 and str(late) in r.stdout


def put_back(f: Path, data: bytes) -> None:
    st = f.stat()
    f.write_bytes(data)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("name", ["d2/f5.txt", "d0/f0.txt", "d1/f1.txt"])
def test_size_and_content_drift_behind_the_mtime_are_caught(ch: Chain, name: str) -> None:
    """d2/f5.txt was stored by the full only, d0/f0.txt last by day 1, d1/f1.txt by day 2 (the
    archive checked): each is compared with the newest archive of the chain that stored it."""
    ch.days()
    f = ch.s / name
    body = f.read_bytes()
    put_back(f, body[:-1] + (b"X" if body[-1:] != b"X" else b"Y"))  # same size, same mtime
    code, d = ch.check("--sample", "100")
    assert code == 1, d
    assert d["drift"] == 1 and d["drift_paths"] == [str(f)] and d["missing"] == 0, d
    assert "differ from the archive although their size and mtime match" in d["error"]
    put_back(f, body[: len(body) // 2])  # truncated, mtime put back: a stat finds it, any sample
    code, d = ch.check("--sample", "0")
    assert code == 1 and d["size_drift"] == 1 and d["size_drift_paths"] == [str(f)], d
    assert "changed size without their mtime changing" in d["error"]


def test_a_broken_chain_fails_the_check_naming_the_link(ch: Chain) -> None:
    full, inc1, inc2 = ch.days()
    middle = ch.backups / inc1["path"]
    # a flipped byte that keeps the size: the chain's links hold; reading the archive finds it
    raw = bytearray(middle.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    middle.write_bytes(bytes(raw))
    r = run_cli("check-source", env=ch.env)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    d = state(ch.backups)["last_spot_check"]
    assert d["ok"] is False and d["archive"] == inc2["filename"]
    assert d["error"].startswith(f"cannot read {inc1['filename']} (archive 2 of 3 of the chain of"), d
    assert "\n" not in d["error"]
    # the archive gone: the chain itself is broken, said before anything is read
    middle.unlink()
    code, d = ch.check(inc2["filename"])
    assert code == 1, d
    assert d["archive"] == inc2["filename"]
    assert "chain is broken" in d["error"] and f"{inc1['filename']} is not on disk" in d["error"], d
    assert "\n" not in d["error"] and d["files"] == 0
    assert run_cli("status", env=ch.env).returncode == 1
    # with no name, the newest restorable point is checked: the full, alone, which lacks day 1 and 2
    code, d = ch.check()
    assert code == 1 and d["archive"] == full["filename"] and d["missing"] == 3, d


class Tampering(Run):
    """A scheduled run during which, once its archive is written and verified (the step before the
    spot check), a writer changes a file behind its mtime: what the after-backup check is for."""

    tamper: Callable[[], None] = staticmethod(lambda: None)

    def offsite(self) -> Any:
        type(self).tamper()
        return super().offsite()


def test_the_check_after_a_scheduled_incremental_backup(tmp_path: Path) -> None:
    """Scheduled runs in incremental mode: every day is checked, an incremental against its chain's
    final tree from its own verification pass (the entries it did not store by their size and
    mtime in its .snap; the sample from those it stored); drift behind an mtime is caught on an
    incremental day, in a file only the full stored (size) and in one the day stored (content)."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    s = data / "storage"
    for i in range(40):
        write(s / f"d{i % 4}" / f"f{i}.txt", f"{i}" * (100 + i), mtime=T0)
    env = {
        "GOFR_PROJECT": "plot",
        "GOFR_PLOT_BACKUP_DATA_DIR": str(data),
        "GOFR_PLOT_BACKUP_DIR": str(backups),
        "GOFR_PLOT_BACKUP_PATHS": "storage:storage",
        "GOFR_PLOT_BACKUP_MODE": "incremental",
        "GOFR_PLOT_BACKUP_SPOT_CHECK_SAMPLE": "100",
        "GOFR_PLOT_BACKUP_REPORT_FILE": "off",
    }
    config = BackupConfig.from_env(env=env)
    clock = SimClock(datetime(2026, 5, 1, 2, 0, tzinfo=UTC))

    def day(n: int, tamper: Callable[[], None] = lambda: None) -> dict[str, Any]:
        clock.t = datetime(2026, 5, 1, 2, 0, tzinfo=UTC) + timedelta(days=n)
        Tampering.tamper = staticmethod(tamper)
        out = Tampering(config, clock, Manifest(backups), lambda: False, "daily", "schedule")()  # type: ignore[arg-type]
        assert out.status == "ok", out.error
        return entries(backups)[-1]

    def old() -> int:
        return sum(os.lstat(p).st_mtime < T0 + 10_000 for p in [s, *s.rglob("*")])

    e = day(0)
    assert e["kind"] == "full" and e["spot_check"]["ok"] is True, e["spot_check"]
    write(s / "d0" / "f0.txt", "changed", mtime=T0 + 100)
    write(s / "d9" / "new.txt", "added", mtime=T0 + 100)
    (s / "d1" / "f1.txt").unlink()
    e = day(1)
    assert e["kind"] == "incremental", e
    sc = e["spot_check"]
    assert sc["ok"] is True and sc["missing"] == 0 and sc["size_drift"] == 0 and sc["drift"] == 0, sc
    assert sc["files"] == old() and sc["files"] >= 40, sc
    assert sc["sampled"] == 2, sc  # f0.txt and new.txt: what this archive stored
    assert any("checked by presence, size and mtime" in n for n in sc["notes"]), sc["notes"]
    assert state(backups)["last_spot_check"] == sc
    # a file only the full stored, truncated behind its mtime once the day's archive is written
    f2 = s / "d2" / "f2.txt"
    e = day(2, lambda: put_back(f2, b"short"))
    assert e["kind"] == "incremental"
    sc = e["spot_check"]
    assert sc["ok"] is False and sc["size_drift_paths"] == [str(f2)], sc
    assert "changed size without their mtime changing" in sc["error"]
    # (the next run stores it: its ctime changed) a file this day stored, its content changed behind
    # its mtime and size: the sample finds it against the new archive's index
    f3 = write(s / "d3" / "f3.txt", "changed on day 3", mtime=T0 + 300)
    e = day(3, lambda: put_back(f3, b"CHANGED on day 3"))
    sc = e["spot_check"]
    assert e["kind"] == "incremental" and sc["ok"] is False, sc
    assert sc["drift_paths"] == [str(f3)] and sc["size_drift"] == 0, sc
    # untouched since: passes again
    e = day(4)
    assert e["kind"] == "incremental" and e["spot_check"]["ok"] is True, e["spot_check"]


def test_the_after_backup_check_without_its_own_pass_reads_the_chain(ch: Chain) -> None:
    """When the new archive's pass gave no view (its .snap did not load), the after-backup check
    of an incremental reads the whole chain, as check-source does."""
    full, inc1, inc2 = ch.days()
    config = BackupConfig.from_env(env=ch.env)
    clock = SimClock(datetime.now(UTC))
    res = spot_check.after_backup(config, clock, Manifest(ch.backups).load("plot")[-1], None, lambda: False)
    assert res.ok, res.error
    assert res.archive == inc2["filename"] and res.files == old_entries(ch, inc2)
    assert any("chain of 3 archive(s)" in n for n in res.notes), res.notes
    put_back(ch.s / "d2" / "f5.txt", b"")
    res = spot_check.after_backup(config, clock, Manifest(ch.backups).load("plot")[-1], None, lambda: False)
    assert not res.ok and res.size_drift_paths == [str(ch.s / "d2" / "f5.txt")], res


def test_an_incremental_the_manifest_does_not_list_is_not_compared_alone(ch: Chain) -> None:
    full, inc1, inc2 = ch.days()
    m = json.loads((ch.backups / "manifest.json").read_text())
    m["backups"] = [e for e in m["backups"] if e["filename"] != inc2["filename"]]
    (ch.backups / "manifest.json").write_text(json.dumps(m))
    code, d = ch.check(inc2["filename"])
    assert code == 1 and d["missing"] == 0, d  # not the day's changes alone: no false "missing"
    assert "incremental archive that the manifest does not list" in d["error"], d
