"""Restore drills of incrementals (issue 17): `gofr-backup drill` restores an incremental's whole
chain into the scratch dir with the real restore engine and checks the copy against the chain's
final tree (the last archive's GNU.dumpdir listings, each file's BLAKE3 from the newest archive
that stored it), not against the last archive alone. Real runs in incremental mode via the CLI
(`gofr-backup now`), real changes between them (modify, add, delete, rename, a live SQLite
database in WAL mode), real damage. Nothing is mocked."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3
from gofrtest import Members, cli_env, manifest, needs, rewrite_archive, run_cli, without_dac, write

from gofr_common.backup import drill as drill_mod
from gofr_common.backup.archive_format import INDEX_NAME, index_line, read_index
from gofr_common.backup.config import BackupConfig
from gofr_common.backup.restore import RestoreRequest, run_restore
from gofr_common.backup.verify import Capture, capturing

PATHS = "storage:storage,auth:auth"
SIBLINGS = ("-wal", "-shm", "-journal")


def state(backups: Path) -> dict[str, Any]:
    return json.loads((backups / ".gofr-plot.state.json").read_text())


class App:
    """A data dir backed up in incremental mode, day by day; a SQLite database kept open (WAL)
    across the runs, as a live application would."""

    def __init__(self, tmp: Path, **extra: str) -> None:
        self.tmp = tmp
        self.data, self.backups = tmp / "data", tmp / "backups"
        s = self.data / "storage"
        t0 = 1_700_000_000
        write(s / "doc.json", json.dumps({"id": 1}), mtime=t0)
        write(s / "deep" / "blob.bin", os.urandom(120_000), mtime=t0)
        write(s / "old.txt", "to be deleted\n", mtime=t0)
        write(s / "keep.txt", "never changes\n", mtime=t0)
        write(s / "odd\\name\nwith newline.txt", "escaped in the index", mtime=t0)
        write(self.data / "auth" / "tokens.json", '{"t": "secret"}', 0o600, t0)
        os.link(s / "deep" / "blob.bin", s / "blob-link.bin")
        os.symlink("doc.json", s / "doc-link")
        self.db = sqlite3.connect(s / "app.db")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("create table t(id integer primary key, v text)")
        self.insert(2000)
        self.env = cli_env(
            self.data,
            self.backups,
            **{
                "GOFR_{P}_BACKUP_PATHS": PATHS,
                "GOFR_{P}_BACKUP_MODE": "incremental",
                "GOFR_{P}_BACKUP_DRILL_JSON_GLOB": "*.json",
                **extra,
            },
        )
        self.entries: list[dict[str, Any]] = []

    def insert(self, n: int) -> None:
        self.db.executemany("insert into t(v) values (?)", [(f"value-{i:06d}" * 3,) for i in range(n)])
        self.db.commit()

    def now(self) -> dict[str, Any]:
        r = run_cli("now", "--json", env=self.env)
        assert r.returncode == 0, r.stderr
        e = json.loads(r.stdout)
        self.entries.append(e)
        return e

    def days(self) -> list[dict[str, Any]]:
        """A full, then three incrementals over real changes."""
        s = self.data / "storage"
        assert self.now()["kind"] == "full"
        # day 1: modify, add, delete; the database grows (its commits land in the -wal)
        write(s / "doc.json", json.dumps({"id": 1, "text": "changed"}))
        write(s / "new" / "a.txt", "a new file\n")
        write(s / "new" / "b.json", '{"b": 2}')
        os.unlink(s / "old.txt")
        self.insert(500)
        assert self.now()["kind"] == "incremental"
        # day 2: a directory and a file renamed, a link retargeted, the database again
        os.rename(s / "deep", s / "deep2")
        os.rename(s / "doc.json", s / "doc-renamed.json")
        os.unlink(s / "doc-link")
        os.symlink("doc-renamed.json", s / "doc-link")
        self.insert(300)
        assert self.now()["kind"] == "incremental"
        # day 3: a directory deleted, a file added, a secret rotated
        (s / "new" / "a.txt").unlink()
        (s / "new" / "b.json").unlink()
        (s / "new").rmdir()
        write(s / "late.json", '{"late": true}')
        write(self.data / "auth" / "tokens.json", '{"t": "rotated"}', 0o600)
        assert self.now()["kind"] == "incremental"
        return self.entries

    def live(self) -> tuple[int, int]:
        """(entries, regular files) of the live tree as a restore holds it: without a database's
        -wal/-shm (its snapshot holds their commits)."""
        entries = files = 0
        for top in ("storage", "auth"):
            for p in [self.data / top, *(self.data / top).rglob("*")]:
                if p.name.endswith(SIBLINGS):
                    continue
                entries += 1
                files += stat.S_ISREG(os.lstat(p).st_mode)
        return entries, files


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = App(tmp_path)
    yield a
    a.db.close()


def drill(app: App, *args: str) -> tuple[int, dict[str, Any]]:
    r = run_cli("drill", *args, "--json", env=app.env)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def test_a_drill_of_the_newest_incremental_restores_its_chain_and_checks_the_final_tree(app: App) -> None:
    full, inc1, inc2, inc3 = app.days()
    code, d = drill(app)  # no name: the newest usable restore point
    assert code == 0, d
    assert d["archive"] == inc3["filename"] and d["ok"] is True and d["error"] is None
    assert d["chain"] == 4
    entries, files = app.live()
    # the chain's final tree, not the last archive: its end marker counts only what it stores
    assert inc3["file_count"] < entries
    assert d["files"] == entries and d["checks"]["tree"] == entries, d
    # every regular file, hashed against the newest archive that stored it
    assert d["checks"]["hashes"] == files
    assert d["checks"]["sqlite"] == 1 and d["checks"]["json"] == 3  # doc-renamed, late, tokens
    assert any(
        n.startswith("restored with its chain of 4 archives: " + full["filename"]) for n in d["notes"]
    ), d["notes"]
    [e] = [x for x in manifest(app.backups) if x["filename"] == inc3["filename"]]
    assert e["drill"] == d and state(app.backups)["last_drill"] == d
    assert not (app.backups / ".gofr-plot.drill").exists()
    # the human output says the chain
    r = run_cli("drill", inc3["filename"], env=app.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Restore drill of {inc3['filename']}: OK" in r.stdout
    assert "chain: 4 archive(s)" in r.stdout and "the chain's final tree" in r.stdout, r.stdout
    r = run_cli("list", env=app.env)
    assert "a chain of 4 archives)" in r.stdout, r.stdout


def test_a_drill_of_a_middle_incremental_checks_that_day(app: App) -> None:
    full, inc1, inc2, inc3 = app.days()
    code, d = drill(app, inc1["filename"])
    assert code == 0, d
    assert d["chain"] == 2 and d["archive"] == inc1["filename"]
    # day 1's tree: new/, new/a.txt, new/b.json added, old.txt gone (entries of today's tree
    # differ by: new/ + 2 files, deep vs deep2 (same count), late.json)
    entries, files = app.live()
    assert d["files"] == entries + 3 - 1 and d["checks"]["hashes"] == files + 2 - 1, d
    assert d["checks"]["json"] == 3  # doc.json, new/b.json, tokens.json


def _alter(archive: Path, backups: Path, name: str, data: bytes, index_too: bool) -> None:
    """An attacker's edit of one member of ``archive``, re-signed: its .sha256 and the manifest's
    checksum recomputed, and (``index_too``) its index line too."""

    def edit(members: Members) -> Members:
        out: Members = []
        for m, body in members:
            if m.name == name:
                body = data
            elif m.name == INDEX_NAME and index_too:
                assert body is not None
                body = b"".join(
                    index_line(n, blake3(data).hexdigest() if n == name else h)
                    for n, h in read_index(io.BytesIO(body))
                )
            out.append((m, body))
        return out

    rewrite_archive(archive, backups, edit)


@pytest.mark.parametrize("index_too", [False, True], ids=["member-only", "member-and-index"])
def test_a_member_of_an_earlier_archive_altered_and_re_signed_fails_the_drill(
    app: App, index_too: bool
) -> None:
    """keep.txt is stored by the full only (unchanged since: N in every later listing); an attacker
    rewrites it in the full and re-signs the full. Whatever catches it (the full's own index, or
    the chain's links: each child names its parent's sha256), the drill of the newest fails and
    names the full."""
    full, inc1, inc2, inc3 = app.days()
    archive = app.backups / full["path"]
    with tarfile.open(archive, "r:gz") as tar:
        assert tar.extractfile("storage/keep.txt").read() == b"never changes\n"  # type: ignore[union-attr]
    _alter(archive, app.backups, "storage/keep.txt", b"never changeS\n", index_too)
    code, d = drill(app, inc3["filename"])
    assert code == 1 and d["ok"] is False and d["checked"] is True, d
    assert full["filename"] in d["error"], d["error"]
    assert "\n" not in d["error"]
    [e] = [x for x in manifest(app.backups) if x["filename"] == inc3["filename"]]
    assert e["drill"]["ok"] is False  # recorded against the restore point
    assert not (app.backups / ".gofr-plot.drill").exists()


def test_a_file_altered_in_the_restored_copy_is_caught(app: App) -> None:
    """The check itself, on a copy the real restore engine made of the real chain (the drill's own
    record of the passes), then altered: a changed byte, a file removed, a file added."""
    full, inc1, inc2, inc3 = app.days()
    cfg = BackupConfig.from_env(env=app.env)
    links = drill_mod._chain_entries(cfg, inc3, drill_mod.DrillResult("x", "now"))
    assert links is not None and len(links) == 4
    scratch = app.tmp / "copy"

    def restore_and_check(damage: Any) -> str | None:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        with open(scratch / ".idx", "w+b") as index:
            cap = Capture(index=index)
            rec = drill_mod._ChainRecord(scratch, cap)
            with capturing(cap):
                run_restore(cfg, RestoreRequest(name=inc3["filename"], target=scratch, scratch=True))
            rec.flush()
            (scratch / ".idx").unlink()
            damage()
            res = drill_mod.DrillResult("x", "now")
            try:
                drill_mod._check_chain_copy(cfg, scratch, ["storage", "auth"], rec, lambda: False, res, False)
            except drill_mod._Failed as e:
                return str(e)
            finally:
                rec.close()
            return None

    assert restore_and_check(lambda: None) is None
    keep = scratch / "storage" / "keep.txt"
    why = restore_and_check(lambda: keep.write_bytes(b"never changeS\n"))
    assert why is not None and "differ from the record of the newest archive" in why and "keep.txt" in why
    why = restore_and_check(lambda: keep.unlink())
    assert why is not None and "missing from the restored copy: storage/keep.txt" in why, why
    why = restore_and_check(lambda: write(scratch / "storage" / "deep2" / "stray.txt", "x"))
    assert why is not None and "no archive of the chain stored" in why and "stray.txt" in why, why
    assert "final tree does not hold" in why


def test_a_deleted_middle_archive_fails_the_drill_naming_it(app: App) -> None:
    full, inc1, inc2, inc3 = app.days()
    os.unlink(app.backups / inc2["path"])
    code, d = drill(app, inc3["filename"])
    assert code == 1 and d["ok"] is False and d["checked"] is True, d
    assert "its chain is broken" in d["error"] and inc2["filename"] in d["error"], d["error"]
    [e] = [x for x in manifest(app.backups) if x["filename"] == inc3["filename"]]
    assert e["drill"]["ok"] is False
    r = run_cli("drill", inc3["filename"], env=app.env)
    assert r.returncode == 1 and "FAILED" in r.stdout and inc2["filename"] in r.stdout, r.stdout
    # without a name, the drill takes the newest point whose chain is intact: inc1
    code, d = drill(app)
    assert code == 0 and d["archive"] == inc1["filename"] and d["chain"] == 2, d


def test_a_full_mode_drill_is_unchanged(tmp_path: Path) -> None:
    a = App(tmp_path, **{"GOFR_{P}_BACKUP_MODE": "full"})
    try:
        e = a.now()
        assert e.get("kind", "full") == "full"
        code, d = drill(a)
        assert code == 0, d
        assert d["chain"] is None and d["files"] == e["file_count"] and d["bytes"] == e["source_bytes"]
        assert not any("chain" in n for n in d["notes"])
        r = run_cli("drill", env=a.env)
        assert r.returncode == 0 and "chain" not in r.stdout
        assert "entry count and bytes against the archive's record" in r.stdout
    finally:
        a.db.close()


def test_an_incomplete_incremental_drills_what_it_holds(app: App) -> None:
    """A new file the backup cannot read (run without root's read-anything capability): the
    incremental is incomplete, its listing names the file, no archive stores it. The drill of it
    passes and says what the copy lacks; the complete one after it drills as usual."""
    needs(shutil.which("setpriv") is not None and os.geteuid() == 0, "needs root and setpriv")
    assert app.now()["kind"] == "full"
    write(app.data / "storage" / "secret.txt", "no one may read this\n", 0o000)
    r = subprocess.run(without_dac("now", "--json"), env=app.env, capture_output=True, text=True)
    assert r.returncode == 3, r.stderr  # completed with warnings: incomplete
    inc = json.loads(r.stdout)
    assert inc["kind"] == "incremental" and inc["complete"] is False, inc
    code, d = drill(app, inc["filename"])
    assert code == 0, d
    assert d["chain"] == 2
    assert any("missing from the restored copy: storage/secret.txt" in n for n in d["notes"]), d["notes"]
    assert any("entry count and bytes were not compared" in n for n in d["notes"]), d["notes"]
