"""Restoring a chain (issue 17, step 3): `gofr-backup restore NAME` of an incremental archive
restores its full and every incremental up to NAME, in order, into one staging, then swaps it in.

Chains are written with incremental.write_chained over real trees and recorded in the manifest by
`chain_entry` below (kind, parent, full: the shared contract), as the scheduled run will. Every
check compares real trees: the restored one (our CLI, as a subprocess) with the live tree of that
day, and with what GNU tar alone (`tar --listed-incremental=/dev/null -xf` each archive in order)
makes of the same archives.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from gofrtest import cli_env, popen_cli, run_cli, snapshot, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_dumpdir_format import OPS, Op, _apply, diff
from test_dumpdir_format import snapshot as raw_tree

from gofr_common.backup.config import BackupConfig
from gofr_common.backup.incremental import load_snapshot, write_chained
from gofr_common.backup.manifest import Entry, Manifest, new_entry
from gofr_common.backup.writer import WriteResult

TAR = shutil.which("tar")
pytestmark = pytest.mark.skipif(TAR is None, reason="GNU tar is not installed")
DAY0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
T0 = 1_700_000_000
PATHS = "storage:storage,auth:auth,cfg:config.json"
NAMES3 = ("storage", "auth", "cfg")


def env_of(data: Path, backups: Path, paths: str = PATHS) -> dict[str, str]:
    return cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": paths, "GOFR_{P}_BACKUP_COMPRESSION": "none"})


def chain_entry(w: WriteResult, parent: Entry | None, full: Entry | None) -> Entry:
    """The manifest entry the scheduled run records for a chained archive (shared contract)."""
    e = new_entry(
        project="plot",
        filename=w.filename,
        tier="daily",
        created=str(w.meta["created"]),
        size_bytes=w.size_bytes,
        sha256=w.sha256,
        compression=str(w.meta.get("compression")),
        file_count=w.file_count,
        source_bytes=w.source_bytes,
        trigger="schedule",
        complete=w.complete,
    )
    e["verified"] = True
    e["kind"] = str(w.meta["kind"])
    e["parent"] = (
        None if parent is None else {"filename": parent["filename"], "sha256": str(parent["sha256"])}
    )
    e["full"] = None if full is None else {"filename": full["filename"], "sha256": str(full["sha256"])}
    return e


class Chain:
    """A chain being written day by day over ``data``, recorded in ``backups``' manifest."""

    def __init__(self, data: Path, backups: Path, paths: str = PATHS) -> None:
        self.data, self.backups = data, backups
        self.env = env_of(data, backups, paths)
        self.cfg = BackupConfig.from_env(env=self.env)
        self.results: list[WriteResult] = []
        self.entries: list[Entry] = []

    def day(self, n: int, full: bool = False) -> WriteResult:
        base = None
        if self.results and not full:
            prev = self.results[-1]
            base = load_snapshot(prev.path, prev.sha256)
        w = write_chained(self.cfg, "daily", DAY0 + timedelta(days=n), base)
        if base is None:
            e = chain_entry(w, None, None)
        else:
            head = next(x for x in reversed(self.entries) if x["kind"] == "full")
            e = chain_entry(w, self.entries[-1], head)
        Manifest(self.backups).add(e)
        self.results.append(w)
        self.entries.append(e)
        return w

    def archives(self, upto: int) -> list[Path]:
        """The archives restore point ``upto`` needs, full first."""
        start = max(i for i in range(upto + 1) if self.entries[i]["kind"] == "full")
        return [w.path for w in self.results[start : upto + 1]]


def trees(data: Path) -> dict[str, Any]:
    return {
        "storage": snapshot(data / "storage"),
        "auth": snapshot(data / "auth"),
        "cfg": snapshot(data / "config.json"),
    }


def restored(dest: Path) -> dict[str, Any]:
    return {
        "storage": snapshot(dest / "storage"),
        "auth": snapshot(dest / "auth"),
        "cfg": snapshot(dest / "cfg"),
    }


def gnu_restore(archives: list[Path], dest: Path) -> None:
    assert TAR is not None
    dest.mkdir(parents=True)
    for a in archives:
        r = subprocess.run(
            [TAR, "--listed-incremental=/dev/null", "-xf", str(a)], cwd=dest, capture_output=True, text=True
        )
        assert r.returncode == 0 and "Cannot" not in r.stderr, r.stderr


def gnu_trees(dest: Path) -> dict[str, Any]:
    return restored(dest)  # the archive's names: storage, auth, cfg


# -- the day-by-day scenario ------------------------------------------------------------------------
def day0(data: Path) -> None:
    s = data / "storage"
    write(s / "a.txt", "alpha\n", 0o644, T0)
    write(s / "b.txt", "bravo\n", 0o644, T0)
    write(s / "sub" / "c.txt", "charlie\n", 0o644, T0)
    write(s / "sub" / "deep" / "d.txt", "delta\n", 0o600, T0)
    write(s / "olddir" / "x.txt", "x\n", 0o644, T0)
    write(s / "file2dir", "a file today\n", 0o644, T0)
    write(s / "dir2file" / "inner.txt", "a directory today\n", 0o644, T0)
    write(s / "hard1", "linked\n", 0o644, T0)
    os.link(s / "hard1", s / "sub" / "hard2")
    write(s / "big.bin", os.urandom(300_000), 0o644, T0)
    os.symlink("a.txt", s / "link")
    os.symlink("nowhere", s / "dangling")
    (s / "empty").mkdir()
    write(s / os.fsdecode(b"\xff not utf-8"), "latin-1 name\n", 0o644, T0)
    write(s / "e\nf" / "é", "newline and é\n", 0o644, T0)
    write(data / "auth" / "tokens.json", '{"t": 1}', 0o600, T0)
    write(data / "config.json", '{"cfg": 1}', 0o644, T0)


def day1(data: Path) -> None:
    s = data / "storage"
    write(s / "a.txt", "alpha, modified\n", 0o644, T0 + 100)
    write(s / "new.txt", "new\n", 0o644, T0 + 100)
    (s / "b.txt").unlink()
    shutil.rmtree(s / "olddir")
    os.rename(s / "sub" / "c.txt", s / "sub" / "c2.txt")  # a renamed file
    os.rename(s / "sub" / "deep", s / "deeper")  # a renamed directory
    (s / "file2dir").unlink()
    write(s / "file2dir" / "now.txt", "a directory now\n", 0o644, T0 + 100)
    shutil.rmtree(s / "dir2file")
    write(s / "dir2file", "a file now\n", 0o644, T0 + 100)
    (s / "link").unlink()
    os.symlink("new.txt", s / "link")  # retargeted
    os.chmod(s / "big.bin", 0o600)
    write(s / "hard1", "linked, changed\n", 0o644, T0 + 100)  # the link group, changed
    write(data / "config.json", '{"cfg": 2}', 0o644, T0 + 100)
    write(s / os.fsdecode(b"\xff not utf-8"), "latin-1 name, changed\n", 0o644, T0 + 100)


def day2(data: Path) -> None:
    s = data / "storage"
    shutil.rmtree(s / "file2dir")
    os.symlink("deeper", s / "file2dir")  # directory -> symlink
    (s / "dangling").unlink()
    (s / "dangling").mkdir()  # symlink -> directory
    write(s / "dangling" / "in.txt", "inside\n", 0o640, T0 + 200)
    os.link(s / "new.txt", s / "new-link")  # a new hard link
    shutil.rmtree(s / "empty")
    (s / os.fsdecode(b"\xff not utf-8")).unlink()
    os.rename(s / "e\nf", s / "e\nf renamed")
    write(data / "auth" / "more.json", "{}", 0o600, T0 + 200)


def day3(data: Path) -> None:  # a quiet day, then auth vanishes
    shutil.rmtree(data / "auth")


DAYS = [day1, day2, day3]


@pytest.fixture
def scenario(tmp_path: Path) -> dict[str, Any]:
    data, backups = tmp_path / "app" / "data", tmp_path / "backups"
    day0(data)
    ch = Chain(data, backups)
    ch.day(0)
    days = [trees(data)]
    for n, change in enumerate(DAYS, 1):
        change(data)
        ch.day(n)
        days.append(trees(data))
    return {"chain": ch, "days": days, "data": data, "tmp": tmp_path}


def test_each_day_restores_exactly_by_our_restore_and_by_gnu_tar(scenario: dict[str, Any]) -> None:
    ch: Chain = scenario["chain"]
    tmp: Path = scenario["tmp"]
    for k, want in enumerate(scenario["days"]):
        name = ch.results[k].filename
        dest = tmp / f"ours-{k}"
        r = run_cli("restore", name, "--target", str(dest), "--yes", env=ch.env)
        assert r.returncode == 0, r.stderr
        got = restored(dest)
        if k == 3:  # auth vanished: the last header does not list it, so it is not restored
            assert got["auth"] == {} and want["auth"] == {} and not (dest / "auth").exists()
        assert got == want, (k, diff_trees(want, got))
        gnu = tmp / f"gnu-{k}"
        gnu_restore(ch.archives(k), gnu)
        g = gnu_trees(gnu)
        if k == 3:  # GNU tar alone keeps a vanished configured path (documented limitation)
            assert g["auth"] == scenario["days"][2]["auth"]
            g["auth"] = {}
        assert g == want, (k, diff_trees(want, g))
    # the hard links of day 2 are links again
    d2 = tmp / "ours-2" / "storage"
    assert os.stat(d2 / "new.txt").st_ino == os.stat(d2 / "new-link").st_ino
    assert os.stat(d2 / "hard1").st_ino == os.stat(d2 / "sub" / "hard2").st_ino


def diff_trees(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    out = []
    for top in want:
        for k in sorted(set(want[top]) | set(got.get(top, {}))):
            if want[top].get(k) != got.get(top, {}).get(k):
                out.append(f"{top}/{k}: want {want[top].get(k)!r}, got {got.get(top, {}).get(k)!r}")
    return out


def test_in_place_restore_of_a_chain_swaps_and_removes_what_the_day_did_not_have(
    scenario: dict[str, Any],
) -> None:
    ch: Chain = scenario["chain"]
    data: Path = scenario["data"]
    # the live data moves on after day 3
    write(data / "storage" / "later.txt", "written after the last backup\n")
    shutil.rmtree(data / "storage" / "sub")
    write(data / "auth" / "tokens.json", "back, but not in any backup of day 1")
    for k in (1, 2):
        before = {
            n: os.lstat(p).st_ino for n, p in (("storage", data / "storage"), ("cfg", data / "config.json"))
        }
        r = run_cli("restore", ch.results[k].filename, "--yes", env=ch.env)
        assert r.returncode == 0, r.stderr
        assert trees(data) == scenario["days"][k], diff_trees(scenario["days"][k], trees(data))
        # swapped in (a new inode), not written into the live tree
        assert os.lstat(data / "storage").st_ino != before["storage"]
        assert not list(data.parent.rglob(".gofr-restore-*"))
        assert f"restored with its chain: {ch.results[0].filename}" in r.stderr, r.stderr


def test_dry_run_lists_the_chain_and_the_changes_against_its_final_tree(scenario: dict[str, Any]) -> None:
    ch: Chain = scenario["chain"]
    data: Path = scenario["data"]
    before = trees(data)
    r = run_cli("restore", ch.results[2].filename, "--dry-run", "--json", env=ch.env)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [c["filename"] for c in plan["chain"]] == [w.filename for w in ch.results[:3]]
    assert [c["kind"] for c in plan["chain"]] == ["full", "incremental", "incremental"]
    assert all(c["size_bytes"] == w.size_bytes for c, w in zip(plan["chain"], ch.results, strict=False))
    storage = next(t for t in plan["targets"] if t["name"] == "storage")
    auth = next(t for t in plan["targets"] if t["name"] == "auth")
    # live is day 3 (auth gone); day 2 differs from it only by auth: storage unchanged, auth created
    assert storage["created"] == storage["replaced"] == storage["removed"] == [], storage
    assert sorted(auth["created"]) == ["auth", "auth/more.json", "auth/tokens.json"]
    # against day 0: what the chain's final tree (not any single archive) lacks is removed
    r = run_cli("restore", ch.results[1].filename, "--dry-run", "--json", env=ch.env)
    storage = next(t for t in json.loads(r.stdout)["targets"] if t["name"] == "storage")
    assert "storage/new-link" in storage["removed"] and "storage/dangling/in.txt" in storage["removed"]
    assert "storage/dangling" in storage["replaced"] and "storage/file2dir" in storage["replaced"]
    assert "storage/sub/c2.txt" not in storage["created"] + storage["replaced"]  # unchanged since day 1
    assert trees(data) == before  # a dry run writes nothing
    # the text form shows the chain, one line per archive
    r = run_cli("restore", ch.results[2].filename, "--dry-run", env=ch.env)
    assert r.returncode == 0, r.stderr
    for w, kind in zip(ch.results[:3], ["full", "incremental", "incremental"], strict=True):
        assert any(w.filename in line and kind in line for line in r.stdout.splitlines()), r.stdout


def flip(path: Path, at: float = 0.5) -> None:
    b = bytearray(path.read_bytes())
    i = int(len(b) * at)
    b[i] ^= 0xFF
    path.write_bytes(bytes(b))


def test_a_corrupted_middle_archive_breaks_exactly_the_points_after_it(scenario: dict[str, Any]) -> None:
    ch: Chain = scenario["chain"]
    tmp: Path = scenario["tmp"]
    flip(ch.results[1].path)  # nothing else is fixed: its .sha256 and the manifest still disagree
    for k in (2, 3):
        dest = tmp / f"refused-{k}"
        r = run_cli("restore", ch.results[k].filename, "--target", str(dest), "--yes", env=ch.env)
        assert r.returncode != 0
        assert ch.results[1].filename in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not dest.exists()  # nothing staged, nothing created
    r = run_cli("restore", ch.results[0].filename, "--target", str(tmp / "ok-0"), "--yes", env=ch.env)
    assert r.returncode == 0, r.stderr
    assert restored(tmp / "ok-0") == scenario["days"][0]
    # the corrupted archive itself is refused too (its own checksum)
    r = run_cli("restore", ch.results[1].filename, "--target", str(tmp / "r1"), "--yes", env=ch.env)
    assert r.returncode != 0 and ch.results[1].filename in r.stderr
    # --latest passes over the broken points, naming the broken link, and restores day 0
    r = run_cli("restore", "--latest", "--target", str(tmp / "latest"), "--yes", env=ch.env)
    assert r.returncode == 0, r.stderr
    assert f"passing over the newer {ch.results[3].filename}" in r.stderr
    assert ch.results[1].filename in r.stderr.split(f"passing over the newer {ch.results[3].filename}")[1]
    assert restored(tmp / "latest") == scenario["days"][0]


def test_corruption_the_checksums_agree_with_is_found_while_extracting(scenario: dict[str, Any]) -> None:
    """A middle archive rewritten with its checksum, sidecar and manifest entry all updated: only
    the content checks (BLAKE3 index) can tell; the live data is untouched."""
    ch: Chain = scenario["chain"]
    data: Path = scenario["data"]
    w = ch.results[1]
    raw = w.path.read_bytes()
    i = raw.index(b"alpha, modified")
    raw = raw[:i] + b"ALPHA" + raw[i + 5 :]
    w.path.write_bytes(raw)
    import hashlib

    digest = hashlib.sha256(raw).hexdigest()
    w.path.with_name(w.filename + ".sha256").write_text(f"{digest}  {w.filename}\n")
    doc = json.loads((ch.backups / "manifest.json").read_text())
    for e in doc["backups"]:
        if e["filename"] == w.filename:
            e["sha256"] = digest
        if e["filename"] == ch.results[2].filename:
            e["parent"]["sha256"] = digest
    (ch.backups / "manifest.json").write_text(json.dumps(doc))
    live = trees(data)
    r = run_cli("restore", ch.results[2].filename, "--yes", env=ch.env)
    assert r.returncode != 0 and w.filename in r.stderr, r.stderr
    assert trees(data) == live
    assert not list(data.parent.rglob(".gofr-restore-*"))


def test_a_missing_parent_is_refused_and_changes_nothing(scenario: dict[str, Any]) -> None:
    ch: Chain = scenario["chain"]
    data: Path = scenario["data"]
    live = trees(data)
    ch.results[1].path.unlink()
    r = run_cli("restore", ch.results[3].filename, "--yes", env=ch.env)
    assert r.returncode != 0
    assert ch.results[1].filename in r.stderr and "broken" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert trees(data) == live
    # --latest passes over every point after the missing link, naming it, and takes the full
    r = run_cli("restore", "--latest", "--dry-run", "--json", env=ch.env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["archive"] == ch.results[0].filename
    for k in (3, 2):
        line = next(
            x for x in r.stderr.splitlines() if f"passing over the newer {ch.results[k].filename}" in x
        )
        assert f"its chain is broken: {ch.results[1].filename} is not on disk" in line, line
    assert trees(data) == live
    # what a drill or a spot check picks without a name: the newest point whose chain is intact
    from gofr_common.backup.manifest import choose_archive

    assert choose_archive(ch.cfg.layout, None)[0] == ch.results[0].path
    # gone from the manifest too
    doc = json.loads((ch.backups / "manifest.json").read_text())
    doc["backups"] = [e for e in doc["backups"] if e["filename"] != ch.results[1].filename]
    (ch.backups / "manifest.json").write_text(json.dumps(doc))
    r = run_cli("restore", ch.results[2].filename, "--yes", env=ch.env)
    assert r.returncode != 0 and ch.results[1].filename in r.stderr and "missing" in r.stderr, r.stderr
    assert trees(data) == live


def test_an_incremental_without_its_chain_is_never_restored_alone(scenario: dict[str, Any]) -> None:
    """An incremental the manifest does not know as one (a rebuilt entry, a copied file) would
    restore short: its header says what it is, and it is refused."""
    ch: Chain = scenario["chain"]
    data: Path = scenario["data"]
    doc = json.loads((ch.backups / "manifest.json").read_text())
    for e in doc["backups"]:
        for k in ("kind", "parent", "full"):
            e.pop(k, None)
    (ch.backups / "manifest.json").write_text(json.dumps(doc))
    live = trees(data)
    r = run_cli("restore", ch.results[2].filename, "--yes", env=ch.env)
    assert r.returncode != 0 and "incremental" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert trees(data) == live


def test_an_unchanged_entry_missing_from_the_staged_chain_is_refused(tmp_path: Path) -> None:
    """A chain whose middle archive is skipped (the manifest made to point past it, every
    checksum agreeing) lists as unchanged files no earlier archive restored: refused, never a
    silently short restore."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    day0(data)
    ch = Chain(data, backups)
    ch.day(0)
    write(data / "storage" / "born-day-1.txt", "1")
    ch.day(1)
    write(data / "storage" / "a.txt", "day 2")
    ch.day(2)
    # forge day 2's chain to skip day 1: its header still names day 1, so the header check refuses;
    # the restore point must name the missing link either way
    doc = json.loads((backups / "manifest.json").read_text())
    for e in doc["backups"]:
        if e["filename"] == ch.results[2].filename:
            e["parent"] = {"filename": ch.results[0].filename, "sha256": ch.results[0].sha256}
    (backups / "manifest.json").write_text(json.dumps(doc))
    r = run_cli("restore", ch.results[2].filename, "--target", str(tmp_path / "out"), "--yes", env=ch.env)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert ch.results[1].filename in r.stderr or ch.results[2].filename in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_an_unchanged_entry_no_earlier_archive_staged_stops_the_pass(tmp_path: Path) -> None:
    """The purge's other half: an ``N`` entry must already be staged as a non-directory. Fed the
    full and then day 2 directly (day 1, which added a file day 2 lists as unchanged, left out and
    the header check not run), the extraction itself stops at day 2's directory."""
    from gofr_common.backup.extract import Extractor, Target
    from gofr_common.backup.verify import verify_archive

    data, backups = tmp_path / "data", tmp_path / "backups"
    day0(data)
    ch = Chain(data, backups)
    ch.day(0)
    write(data / "storage" / "born-day-1.txt", "1")
    ch.day(1)
    write(data / "storage" / "a.txt", "day 2")
    ch.day(2)
    for skip, ok in ((True, False), (False, True)):
        ex = Extractor(
            [Target("storage", tmp_path / "nowhere" / "storage", mount=False)], set(NAMES3), dry=True
        )
        assert verify_archive(ch.results[0].path, ch.results[0].sha256, visit=ex).ok
        for w in ch.results[2 if skip else 1 :]:
            ex.next_archive(w.filename, set(NAMES3))
            res = verify_archive(w.path, w.sha256, visit=ex)
        assert res.ok is ok, res.error
        if skip:
            assert "'born-day-1.txt' as unchanged" in str(res.error) and "incomplete" in str(res.error)
        else:
            assert "storage/born-day-1.txt" in ex.tree


def test_restore_chain_takes_a_list_of_archives(scenario: dict[str, Any]) -> None:
    """The entry point for drills and remote restores: plain archive paths, full first."""
    from gofr_common.backup.restore import Link, RestoreRequest, restore_chain

    ch: Chain = scenario["chain"]
    tmp: Path = scenario["tmp"]
    links = [Link(w.path, w.sha256) for w in ch.results[:3]]
    plan = restore_chain(ch.cfg, links, RestoreRequest(target=tmp / "lib"))
    assert restored(tmp / "lib") == scenario["days"][2]
    assert [c["filename"] for c in plan.chain] == [w.filename for w in ch.results[:3]]
    on_disk = {f"storage/{k}" if k != "." else "storage" for k in scenario["days"][2]["storage"]}
    assert {n for n in plan.tree if n.split("/")[0] == "storage"} == on_disk
    # out of order: refused, naming the link
    from gofr_common.backup.errors import VerifyError

    with pytest.raises(VerifyError, match=ch.results[2].filename):
        restore_chain(ch.cfg, [links[0], links[2], links[1]], RestoreRequest(target=tmp / "bad"))
    assert not (tmp / "bad").exists()


def test_a_hard_link_into_an_earlier_archive_is_refused(tmp_path: Path) -> None:
    """Hard links in an incremental point within the same archive (the writer stores a changed
    link group whole): a link member whose target only an earlier archive restored is refused."""
    import tarfile

    from gofrtest import craft_archive

    from gofr_common.backup.errors import VerifyError
    from gofr_common.backup.restore import Link, RestoreRequest, restore_chain

    data = tmp_path / "data"
    write(data / "storage" / "a.txt", "alpha", 0o644, T0)
    ch = Chain(data, tmp_path / "backups", "storage:storage")
    full = ch.day(0)
    d = tarfile.TarInfo("storage")
    d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, T0
    d.pax_headers = {"GNU.dumpdir": "Na.txt\0Yh\0\0"}
    h = tarfile.TarInfo("storage/h")
    h.type, h.linkname, h.mode, h.mtime = tarfile.LNKTYPE, "storage/a.txt", 0o644, T0
    link = {"filename": full.filename, "sha256": full.sha256}
    inc = craft_archive(
        tmp_path / "backups" / "daily" / "gofr-plot_daily_20260302T020000Z.tar.gz",
        [(d, None), (h, None)],
        meta_extra={"kind": "incremental", "chain": {"full": link, "parent": link}},
    )
    links = [Link(full.path, full.sha256), Link(inc)]
    with pytest.raises(VerifyError, match="hard link to 'storage/a.txt'.*same archive"):
        restore_chain(ch.cfg, links, RestoreRequest(target=tmp_path / "out"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no staging left
    # the same archive without the link member restores (the crafted archive itself is sound)
    d.pax_headers = {"GNU.dumpdir": "Na.txt\0\0"}
    inc2 = craft_archive(
        tmp_path / "backups" / "daily" / "gofr-plot_daily_20260303T020000Z.tar.gz",
        [(d, None)],
        meta_extra={"kind": "incremental", "chain": {"full": link, "parent": link}},
    )
    restore_chain(ch.cfg, [Link(full.path, full.sha256), Link(inc2)], RestoreRequest(target=tmp_path / "ok"))
    assert (tmp_path / "ok" / "storage" / "a.txt").read_text() == "alpha"


def test_space_is_counted_for_the_chains_final_tree_not_every_archive(tmp_path: Path) -> None:
    """A 3 MB file rewritten on each of three days: the chain's archives hold 9 MB of it, its
    final tree 3 MB. Into a real 8 MB tmpfs, the dry run and the restore both fit."""
    from gofrtest import tmpfs

    data = tmp_path / "data"
    write(data / "storage" / "big.bin", os.urandom(3 << 20), 0o644, T0)
    ch = Chain(data, tmp_path / "backups", "storage:storage")
    ch.day(0)
    for n in (1, 2):
        write(data / "storage" / "big.bin", os.urandom(3 << 20), 0o644, T0 + n)
        ch.day(n)
    want = snapshot(data / "storage")
    with tmpfs(tmp_path / "small", "size=8m") as mnt:
        r = run_cli("restore", ch.results[2].filename, "--target", str(mnt), "--dry-run", env=ch.env)
        assert r.returncode == 0, r.stderr
        r = run_cli("restore", ch.results[2].filename, "--target", str(mnt), "--yes", env=ch.env)
        assert r.returncode == 0, r.stderr
        assert snapshot(mnt / "storage") == want


def test_a_chain_restores_in_place_into_a_mount_point(tmp_path: Path) -> None:
    """`data:.` with the data volume a real tmpfs: the chain is staged inside the mount point and
    swapped in entry by entry under the journal, as a full is."""
    from gofrtest import tmpfs

    from gofr_common.backup.restore import is_mount

    with tmpfs(tmp_path / "app" / "data", "size=32m") as data:
        s = data / "storage"
        write(s / "a.txt", "a", 0o644, T0)
        write(s / "gone" / "x", "x", 0o644, T0)
        write(data / "top.json", "{}", 0o644, T0)
        ch = Chain(data, tmp_path / "backups", "data:.")
        ch.day(0)
        want = []
        for n in (1, 2):
            write(s / "a.txt", f"a {n}", 0o644, T0 + n)
            write(data / f"new-{n}.txt", "n", 0o644, T0 + n)
            shutil.rmtree(s / "gone", ignore_errors=True)
            os.chmod(data, 0o750 if n == 1 else 0o755)
            ch.day(n)
            want.append(snapshot(data))
        write(data / "later.txt", "after the last backup")
        for k in (1, 2):
            r = run_cli("restore", ch.results[k].filename, "--yes", env=ch.env)
            assert r.returncode == 0, r.stderr
            assert snapshot(data) == want[k - 1]
            assert is_mount(data) and not list(data.glob(".gofr-restore-*"))


def test_a_mount_points_own_mtime_is_restored(tmp_path: Path) -> None:
    """A full-mode archive too: removing the staging base (inside the mount point) after the
    swap set the mount point's mtime to the time of the restore (found by the chain test above;
    this fails on ce0b54b: got the restore's time, not T0)."""
    from gofrtest import tmpfs

    with tmpfs(tmp_path / "app" / "data", "size=8m") as data:
        write(data / "storage" / "a.txt", "a", 0o644, T0)
        os.utime(data, (T0, T0))
        env = env_of(data, tmp_path / "backups", "data:.")
        r = run_cli("now", "--json", env=env)
        assert r.returncode == 0, r.stderr
        want = snapshot(data)
        write(data / "later.txt", "x")
        r = run_cli("restore", json.loads(r.stdout)["filename"], "--yes", env=env)
        assert r.returncode == 0, r.stderr
        assert snapshot(data) == want and int(os.stat(data).st_mtime) == T0


def test_only_and_an_incomplete_link(scenario: dict[str, Any]) -> None:
    ch: Chain = scenario["chain"]
    tmp: Path = scenario["tmp"]
    data: Path = scenario["data"]
    r = run_cli(
        "restore", ch.results[2].filename, "--only", "cfg", "--target", str(tmp / "only"), "--yes", env=ch.env
    )
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp / "only")) == ["cfg"]
    assert snapshot(tmp / "only" / "cfg") == scenario["days"][2]["cfg"]
    # a middle archive that could not read everything: the points after it need --allow-incomplete,
    # and then nothing the chain does not hold is removed from the live data
    doc = json.loads((ch.backups / "manifest.json").read_text())
    for e in doc["backups"]:
        if e["filename"] == ch.results[1].filename:
            e["complete"] = False
    (ch.backups / "manifest.json").write_text(json.dumps(doc))
    write(data / "storage" / "not-in-any-backup.txt", "keep me")
    live = trees(data)
    r = run_cli("restore", ch.results[2].filename, "--yes", env=ch.env)
    assert r.returncode == 2 and ch.results[1].filename in r.stderr and "--allow-incomplete" in r.stderr, (
        r.stderr
    )
    assert trees(data) == live
    r = run_cli("restore", ch.results[2].filename, "--allow-incomplete", "--yes", env=ch.env)
    assert r.returncode == 0, r.stderr
    assert (data / "storage" / "not-in-any-backup.txt").read_text() == "keep me"
    got = trees(data)
    del got["storage"]["not-in-any-backup.txt"]
    want = scenario["days"][2]
    assert got["auth"] == want["auth"] and got["cfg"] == want["cfg"]
    assert {k: v for k, v in got["storage"].items() if k != "."} == {
        k: v for k, v in want["storage"].items() if k != "."
    }


# -- SIGKILL during a chain restore -------------------------------------------------------------------
TRIALS = int(os.environ.get("GOFR_FAULT_TRIALS", "50"))
SEED = int(os.environ.get("GOFR_FAULT_SEED", "1"))


def test_sigkill_during_a_chain_restore_leaves_each_path_old_or_new(tmp_path: Path) -> None:
    data, backups = tmp_path / "app" / "data", tmp_path / "backups"
    day0(data)
    for i in range(300):  # enough members that the extraction of each archive takes a while
        write(data / "storage" / "many" / f"f{i:03}", f"{i}" * 500, 0o644, T0)
    ch = Chain(data, backups)
    ch.day(0)
    for n, change in enumerate(DAYS[:2], 1):
        change(data)
        for i in range(0, 300, 3):
            write(data / "storage" / "many" / f"f{i:03}", f"day {n}", 0o644, T0 + n)
        ch.day(n)
    point = ch.results[2].filename
    new = trees(data)  # what the chain's last point holds
    # the live data moves on
    shutil.rmtree(data / "storage" / "many")
    write(data / "storage" / "after.txt", "after")
    write(data / "config.json", "changed since")
    saved = tmp_path / "saved"
    shutil.copytree(data, saved, symlinks=True)
    old = trees(data)
    # one undisturbed restore: how long it takes, and how long its staging exists (the window in
    # which the archives of the chain are extracted one after the other, then swapped in)
    t0 = time.monotonic()
    p = popen_cli("restore", point, "--yes", env=ch.env)
    staged_at = None
    while p.poll() is None:
        if staged_at is None and list(data.glob(".gofr-restore-*")):
            staged_at = time.monotonic()
    p.communicate()
    assert p.returncode == 0
    duration = time.monotonic() - t0
    window = time.monotonic() - (staged_at or t0)
    assert trees(data) == new
    rng = random.Random(SEED + 17)
    seen = {"old": 0, "new": 0, "mixed paths": 0, "staging": 0}
    problems: list[str] = []
    for i in range(max(6, TRIALS // 4)):
        shutil.rmtree(data)
        shutil.copytree(saved, data, symlinks=True)
        assert trees(data) == old
        p = popen_cli("restore", point, "--yes", env=ch.env)
        if i % 3 == 0:  # anywhere in the whole restore
            time.sleep(rng.uniform(0.05, duration))
        else:  # while the chain is staged: once its staging exists, a random fraction of the window
            t1 = time.monotonic()
            while p.poll() is None and not list(data.glob(".gofr-restore-*")) and time.monotonic() - t1 < 60:
                time.sleep(0.001)
            time.sleep(rng.uniform(0, window))
        seen["staging"] += bool(list(data.glob(".gofr-restore-*")))  # killed with work in flight
        p.send_signal(signal.SIGKILL)
        p.communicate()
        now = trees(data)
        states = set()
        for n in NAMES3:
            if now[n] == old[n] == new[n]:
                continue
            if now[n] == old[n]:
                states.add("old")
            elif now[n] == new[n]:
                states.add("new")
            else:
                problems.append(f"trial {i}: {n} is neither wholly old nor wholly new")
        seen["mixed paths" if len(states) > 1 else next(iter(states), "old")] += 1
        r = run_cli("restore", point, "--yes", env=ch.env)
        if r.returncode != 0:
            problems.append(f"trial {i}: the next restore failed: {r.stderr.strip()}")
        if trees(data) != new:
            problems.append(f"trial {i}: the next restore did not restore the chain's last day")
        if list(data.parent.rglob(".gofr-restore-*")):
            problems.append(f"trial {i}: staging left behind")
    assert not problems, problems
    print(f"chain restore kill trials: {seen}")
    assert seen["staging"] > 0 and seen["old"] > 0, seen  # some kills landed while the chain was staged


# -- the property: generated change sequences -----------------------------------------------------
UTF8_NAMES = [b"a", b"b", b"c d", b"e\nf", "é".encode()]  # no \xff: see test_incremental_writer
ops = st.tuples(st.sampled_from(OPS), st.integers(0, 99), st.integers(0, 99), st.sampled_from(UTF8_NAMES))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(days=st.lists(st.lists(ops, max_size=6), min_size=1, max_size=3), k=st.integers(0, 3))
def test_any_day_of_any_chain_restores_exactly(tmp_path: Path, days: list[list[Op]], k: int) -> None:
    work = tmp_path / "w"
    if work.exists():
        shutil.rmtree(work)
    data = work / "data"
    live = data / "storage"
    (live / "d1" / "d2").mkdir(parents=True)
    for p in ("f", "d1/g", "d1/d2/h"):
        write(live / p, p, 0o644, 1_600_000_000)
    os.symlink("d1", live / "ln")
    os.link(live / "f", live / "d1" / "f-link")
    ch = Chain(data, work / "backups", "storage:storage")
    ch.day(0)
    wants = [raw_tree(live)]
    for n, day in enumerate(days, 1):
        for op in day:
            _apply(bytes(live), op, n)
        ch.day(n)
        wants.append(raw_tree(live))
    k = min(k, len(days))
    dest = work / "ours"
    r = run_cli("restore", ch.results[k].filename, "--target", str(dest), "--yes", env=ch.env)
    assert r.returncode == 0, r.stderr
    assert diff(wants[k], raw_tree(dest / "storage")) == []
    gnu = work / "gnu"
    gnu_restore(ch.archives(k), gnu)
    assert diff(wants[k], raw_tree(gnu / "storage")) == []
    if k < len(days):  # the last point too, over the same target: a second restore replaces the first
        r = run_cli("restore", ch.results[-1].filename, "--target", str(dest), "--yes", env=ch.env)
        assert r.returncode == 0, r.stderr
        assert diff(wants[-1], raw_tree(dest / "storage")) == []
