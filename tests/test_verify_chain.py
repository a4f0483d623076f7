"""``verify --chain`` and the chain lines of ``verify --all`` (issue 17), through the CLI as a
subprocess, over chains written by incremental.write_chained from a real tree changed day by day.
Each way a chain breaks (a flipped byte in a middle archive, a missing parent, a parent replaced by
another archive, a header whose chain record disagrees with the manifest) must fail and name the
link; an intact chain passes. The ``.snap`` beside an archive that is not its own is a warning."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from gofrtest import cli_env, manifest, run_cli, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gofr_common.backup import layout
from gofr_common.backup.config import BackupConfig
from gofr_common.backup.incremental import load_snapshot, snapshot_path, write_chained
from gofr_common.backup.manifest import Entry, Manifest, new_entry
from gofr_common.backup.writer import WriteResult

DAY0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
T0 = 1_700_000_000


def make_tree(data: Path) -> None:
    s = data / "storage"
    for i in range(20):
        write(s / f"d{i % 4}" / f"f{i}.txt", f"file {i}\n" * 50, 0o644, T0)
    write(s / "big.bin", os.urandom(300_000), 0o644, T0)
    write(data / "auth" / "tokens.json", '{"t": 1}', 0o600, T0)


def change(data: Path, day: int) -> None:
    """A day's churn: a changed file, a new one, a deleted one."""
    s = data / "storage"
    write(s / "d0" / "f0.txt", f"changed on day {day}\n", 0o644, T0 + day * 100)
    write(s / "new" / f"day{day}.txt", f"new on day {day}\n", 0o644, T0 + day * 100)
    victim = s / f"d{day % 4}" / f"f{4 + day}.txt"
    if victim.exists():
        victim.unlink()


def env_for(data: Path, backups: Path, **extra: str) -> dict[str, str]:
    return cli_env(
        data,
        backups,
        **{
            "GOFR_{P}_BACKUP_PATHS": "storage:storage,auth:auth",
            "GOFR_{P}_BACKUP_COMPRESSION": "gzip",
            **extra,
        },
    )


def entry_of(
    cfg: BackupConfig, w: WriteResult, created: datetime, base: Entry | None, full: Entry | None
) -> Entry:
    """The manifest entry run.py would add for a chained archive (kind, parent, full)."""
    e = new_entry(
        project=cfg.project,
        filename=w.filename,
        tier="daily",
        created=created.isoformat(),
        size_bytes=w.size_bytes,
        sha256=w.sha256,
        compression=cfg.compression,
        file_count=w.file_count,
        source_bytes=w.source_bytes,
        trigger="schedule",
        duration_s=w.duration_s,
        complete=w.complete,
    )
    e.update({"verified": True, "verified_at": created.isoformat()})
    if base is None:
        e.update({"kind": "full", "parent": None, "full": None})
    else:
        assert full is not None
        link = {"filename": base["filename"], "sha256": str(base["sha256"])}
        e.update(
            {
                "kind": "incremental",
                "parent": link,
                "full": {"filename": full["filename"], "sha256": str(full["sha256"])},
            }
        )
    return e


def add_day(data: Path, backups: Path, env: dict[str, str], es: list[Entry], day: int) -> Entry:
    """Day ``day``'s archive: the day's churn (none on a chain's first day), then an incremental
    over the last of ``es`` (a full when ``es`` is empty), added to the manifest and to ``es``."""
    cfg = BackupConfig.from_env(env=env)
    if es:
        change(data, day)
    created = DAY0 + timedelta(days=day)
    base = load_snapshot(backups / es[-1]["path"], str(es[-1]["sha256"])) if es else None
    w = write_chained(cfg, "daily", created, base)
    e = entry_of(cfg, w, created, es[-1] if es else None, es[0] if es else None)
    Manifest(backups).add(e)
    es.append(e)
    return e


def build_chain(
    data: Path, backups: Path, days: int, env: dict[str, str] | None = None, first_day: int = 0
) -> tuple[BackupConfig, list[Entry]]:
    """A full and ``days - 1`` incrementals, one a day, each after a day's churn, all in the
    manifest (as run.py records them)."""
    env = env or env_for(data, backups)
    out: list[Entry] = []
    for d in range(first_day, first_day + days):
        add_day(data, backups, env, out, d)
    return BackupConfig.from_env(env=env), out


def chain_cli(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    r = run_cli("verify", "--chain", *args, "--json", env=env)
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    return r.returncode, doc


def setup(tmp_path: Path, days: int = 4) -> tuple[Path, Path, dict[str, str], list[Entry]]:
    data, backups = tmp_path / "data", tmp_path / "backups"
    make_tree(data)
    env = env_for(data, backups)
    _, es = build_chain(data, backups, days, env)
    return data, backups, env, es


def flip_byte(p: Path, at: int) -> None:
    with open(p, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x40]))


def test_an_intact_chain_passes_and_each_archive_is_recorded(tmp_path: Path) -> None:
    data, backups, env, es = setup(tmp_path)
    before = {e["filename"]: e["verified_at"] for e in manifest(backups)}
    r = run_cli("verify", "--chain", es[-1]["filename"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split()[1] for ln in lines[:4]] == [e["filename"] for e in es]  # full first
    assert all(ln.startswith("OK") for ln in lines[:4]) and lines[0].split()[2] == "full"
    assert lines[-1].startswith(f"CHAIN OK  {es[-1]['filename']}: 4 archives")
    after = {e["filename"]: e for e in manifest(backups)}
    assert all(after[n]["verified"] is True and after[n]["verified_at"] != before[n] for n in before)
    code, doc = chain_cli(env, "--latest")
    assert code == 0 and doc["ok"] and doc["chain"]["point"] == es[-1]["filename"]
    assert [a["filename"] for a in doc["chain"]["archives"]] == [e["filename"] for e in es]
    assert [a["kind"] for a in doc["chain"]["archives"]] == ["full"] + ["incremental"] * 3
    # a full alone is a chain of one
    code, doc = chain_cli(env, es[0]["filename"])
    assert code == 0 and len(doc["chain"]["archives"]) == 1


def test_a_flipped_byte_in_a_middle_archive_breaks_the_chain_there(tmp_path: Path) -> None:
    data, backups, env, es = setup(tmp_path)
    mid = backups / es[1]["path"]
    flip_byte(mid, mid.stat().st_size // 2)
    code, doc = chain_cli(env, es[-1]["filename"])
    assert code == 1 and not doc["ok"]
    c = doc["chain"]
    assert (
        c["broken"].startswith(f"{es[1]['filename']} failed verification")
        and "checksum mismatch" in c["broken"]
    )
    assert [a["ok"] for a in c["archives"]] == [True, False, True, True]  # every archive still read
    assert next(e for e in manifest(backups) if e["filename"] == es[1]["filename"])["verified"] is False
    r = run_cli("verify", "--chain", es[-1]["filename"], env=env)
    assert r.returncode == 1 and r.stdout.splitlines()[-1].startswith(
        f"CHAIN BROKEN  {es[-1]['filename']}: {es[1]['filename']}"
    )
    # the chain before it is intact
    code, doc = chain_cli(env, es[0]["filename"])
    assert code == 0


def test_a_missing_parent_is_named(tmp_path: Path) -> None:
    data, backups, env, es = setup(tmp_path)
    gone = backups / es[1]["path"]
    gone.unlink()
    code, doc = chain_cli(env, es[-1]["filename"])
    assert code == 1 and doc["chain"]["broken"] == f"{es[1]['filename']} is not on disk"
    # the chain is still followed past it (its manifest entry names its parent): all of it is read
    assert [a["filename"] for a in doc["chain"]["archives"]] == [e["filename"] for e in es]
    assert [a["ok"] for a in doc["chain"]["archives"]] == [True, False, True, True]
    assert doc["chain"]["archives"][1]["error"] == "not on disk"
    # and gone from the manifest too
    Manifest(backups).update(lambda xs: xs.remove(next(x for x in xs if x["filename"] == es[1]["filename"])))
    code, doc = chain_cli(env, es[-1]["filename"])
    assert (
        code == 1
        and doc["chain"]["broken"] == f"{es[1]['filename']} (the parent of {es[2]['filename']}) is missing"
    )
    assert [a["filename"] for a in doc["chain"]["archives"]] == [e["filename"] for e in es[2:]]


def _other_middle(tmp_path: Path, data: Path, backups: Path, es: list[Entry]) -> Path:
    """Another archive with the middle archive's name, made over the same full (a copy of it) from
    another day's tree: its header names the same parent and full, its bytes differ."""
    other = tmp_path / "other-backups"
    (other / "daily").mkdir(parents=True)
    full = backups / es[0]["path"]
    for p in (full, layout.sidecar_path(full), snapshot_path(full)):
        shutil.copy2(p, other / "daily" / p.name)
    write(data / "storage" / "only-in-the-other.txt", "another tree\n", 0o644, T0 + 5)
    cfg = BackupConfig.from_env(env=env_for(data, other))
    w = write_chained(
        cfg, "daily", DAY0 + timedelta(days=1), load_snapshot(other / es[0]["path"], str(es[0]["sha256"]))
    )
    assert w.filename == es[1]["filename"] and w.sha256 != es[1]["sha256"]
    return w.path


def test_a_parent_replaced_by_another_archive_is_named(tmp_path: Path) -> None:
    data, backups, env, es = setup(tmp_path)
    other = _other_middle(tmp_path, data, backups, es)
    mid = backups / es[1]["path"]
    shutil.copy2(other, mid)
    shutil.copy2(layout.sidecar_path(other), layout.sidecar_path(mid))
    new_sha = layout.read_sidecar(mid)
    # the manifest rebuilt from the new file: its entry has the new checksum, the child's link not
    Manifest(backups).set_fields(es[1]["path"], sha256=new_sha)
    code, doc = chain_cli(env, es[-1]["filename"])
    assert code == 1 and doc["chain"]["broken"].startswith(
        f"{es[1]['filename']} (the parent of {es[2]['filename']}) is not the archive {es[2]['filename']} was made over"
    )
    # a manifest that lies all the way (the child's link rewritten too): the child's own header tells
    Manifest(backups).set_fields(es[2]["path"], parent={"filename": es[1]["filename"], "sha256": new_sha})
    code, doc = chain_cli(env, es[-1]["filename"])
    assert code == 1
    c = doc["chain"]
    assert c["broken"] == (
        f"{es[2]['filename']}'s header names its parent {es[1]['filename']} (sha256 {str(es[1]['sha256'])[:16]}), "
        f"the manifest says {es[1]['filename']} (sha256 {str(new_sha)[:16]})"
    )
    assert [a["ok"] for a in c["archives"]] == [True, True, False, True]
    # and with the manifest left as it was written, the header and the file tell the same
    Manifest(backups).set_fields(es[1]["path"], sha256=es[1]["sha256"])
    Manifest(backups).set_fields(
        es[2]["path"], parent={"filename": es[1]["filename"], "sha256": es[1]["sha256"]}
    )
    code, doc = chain_cli(env, es[-1]["filename"])
    assert code == 1 and doc["chain"]["broken"].startswith(
        f"{es[1]['filename']} failed verification: checksum mismatch"
    )


def test_the_actual_parent_is_held_to_the_childs_header(tmp_path: Path) -> None:
    # the manifest and every sidecar agree with the replaced parent; only the child's header knows
    data, backups, env, es = setup(tmp_path)
    other = _other_middle(tmp_path, data, backups, es)
    mid = backups / es[1]["path"]
    shutil.copy2(other, mid)
    shutil.copy2(layout.sidecar_path(other), layout.sidecar_path(mid))
    new_sha = str(layout.read_sidecar(mid))
    link = {"filename": es[1]["filename"], "sha256": new_sha}
    Manifest(backups).set_fields(es[1]["path"], sha256=new_sha)
    Manifest(backups).set_fields(es[2]["path"], parent=link)
    # the child's header is the only record left: make the manifest agree with it again, and the
    # child's header (parent = the old sha) must still be held against the file actually there
    from gofr_common.backup.chain_verify import header_problem
    from gofr_common.backup.verify import verify_archive

    child = {**es[2], "parent": {"filename": es[1]["filename"], "sha256": es[1]["sha256"]}}
    r_parent = verify_archive(mid, new_sha)
    r_child = verify_archive(backups / es[2]["path"], es[2]["sha256"])
    assert r_parent.ok and r_child.ok
    why = header_problem(child, r_child.meta, ({**es[1], "sha256": new_sha}, r_parent), es[0])  # type: ignore[arg-type]
    assert why == (
        f"{es[1]['filename']} (the parent of {es[2]['filename']}) is not the archive {es[2]['filename']} "
        f"was made over: it has sha256 {new_sha[:16]}, {es[2]['filename']}'s header says {str(es[1]['sha256'])[:16]}"
    )


def test_a_header_that_disagrees_with_the_manifest_is_named(tmp_path: Path) -> None:
    data, backups, env, es = setup(tmp_path)
    last = es[-1]
    # the manifest says the last archive is a full (a rebuilt or edited manifest): its header knows
    Manifest(backups).set_fields(last["path"], kind="full", parent=None, full=None)
    code, doc = chain_cli(env, last["filename"])
    assert code == 1
    assert (
        doc["chain"]["broken"]
        == f"{last['filename']}'s header says it is an incremental, the manifest says full"
    )
    assert len(doc["chain"]["archives"]) == 1 and doc["chain"]["archives"][0]["link_error"]
    # the manifest names another full for it (the chain's head is still es[0])
    Manifest(backups).set_fields(
        last["path"],
        kind="incremental",
        parent={"filename": es[-2]["filename"], "sha256": es[-2]["sha256"]},
        full={"filename": es[0]["filename"], "sha256": "f" * 64},
    )
    code, doc = chain_cli(env, last["filename"])
    assert code == 1 and doc["chain"]["broken"] == (
        f"{last['filename']}'s header names its full {es[0]['filename']} (sha256 {str(es[0]['sha256'])[:16]}), "
        f"the manifest says {es[0]['filename']} (sha256 {'f' * 16})"
    )


def test_verify_all_lists_the_restore_points_a_broken_chain_makes_unrestorable(tmp_path: Path) -> None:
    data, backups, env, es = setup(tmp_path, days=4)
    # a second, intact chain after it
    _, es2 = build_chain(data, backups, 2, env, first_day=10)
    gone = backups / es[1]["path"]
    gone.unlink()
    layout.sidecar_path(gone).unlink()
    Manifest(backups).update(lambda xs: xs.remove(next(x for x in xs if x["filename"] == es[1]["filename"])))
    r = run_cli("verify", "--all", env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    ok = [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("OK")]
    assert sorted(ok) == sorted(e["filename"] for e in es + es2 if e is not es[1])  # no archive failed
    broken = [ln for ln in r.stdout.splitlines() if ln.startswith("BROKEN")]
    assert broken == [
        f"BROKEN  {e['filename']}  cannot be restored: {es[1]['filename']} (the parent of {es[2]['filename']}) is missing"
        for e in es[2:]
    ]
    doc = json.loads(run_cli("verify", "--all", "--json", env=env).stdout)
    assert not doc["ok"] and [c["point"] for c in doc["broken_chains"]] == [e["filename"] for e in es[2:]]
    assert all(x["ok"] for x in doc["results"])
    # a middle archive that fails: its FAILED line, and a line for each later point of its chain
    mid = backups / es2[0]["path"]
    flip_byte(mid, mid.stat().st_size // 2)
    doc = json.loads(run_cli("verify", "--all", "--json", env=env).stdout)
    assert [c["point"] for c in doc["broken_chains"]] == [e["filename"] for e in es[2:]] + [
        es2[1]["filename"]
    ]
    assert doc["broken_chains"][-1]["broken"].startswith(f"{es2[0]['filename']} failed verification")


def test_a_snap_that_is_not_the_archives_own_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    data, backups, env, es = setup(tmp_path, days=3)
    last = backups / es[-1]["path"]
    shutil.copy2(snapshot_path(backups / es[-2]["path"]), snapshot_path(last))  # another archive's
    r = run_cli("verify", es[-1]["filename"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"warning: the {snapshot_path(last).name} beside it is not this archive's" in r.stdout
    assert "the next run writes a full" in r.stdout
    doc = json.loads(run_cli("verify", es[-1]["filename"], "--json", env=env).stdout)
    assert doc["ok"] and "not this archive's" in doc["results"][0]["snapshot_warning"]
    code, doc = chain_cli(env, es[-1]["filename"])
    assert code == 0 and "not this archive's" in doc["chain"]["archives"][-1]["snapshot_warning"]
    # its own: no warning; none at all: no warning either (a lost .snap only costs a full)
    doc = json.loads(run_cli("verify", es[-2]["filename"], "--json", env=env).stdout)
    assert doc["results"][0]["snapshot_warning"] is None
    snapshot_path(last).unlink()
    doc = json.loads(run_cli("verify", es[-1]["filename"], "--json", env=env).stdout)
    assert doc["ok"] and doc["results"][0]["snapshot_warning"] is None


def test_chain_option_errors_are_one_line(tmp_path: Path) -> None:
    data, backups, env, es = setup(tmp_path, days=2)
    before = (backups / "manifest.json").read_bytes() if (backups / "manifest.json").exists() else None
    for args in (("--chain", "--all"), ("--chain", es[-1]["filename"], "--repair")):
        r = run_cli("verify", *args, env=env)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "--chain" in r.stderr, r.stderr
    untracked = backups / "daily" / "gofr-plot_daily_20200101_000000.tar.gz"
    shutil.copy2(backups / es[0]["path"], untracked)
    r = run_cli("verify", "--chain", untracked.name, env=env)
    assert r.returncode == 1 and "is not in the manifest" in r.stderr and len(r.stderr.splitlines()) == 1
    after = (backups / "manifest.json").read_bytes() if (backups / "manifest.json").exists() else None
    assert before == after


# -- a property: a break at archive k breaks exactly the restore points from k on, naming k ----------
MUTATIONS = ("flip", "delete file", "drop entry", "manifest lies")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=st.integers(0, 4), how=st.sampled_from(MUTATIONS), where=st.floats(0.0, 0.999))
def test_a_break_anywhere_breaks_exactly_the_later_restore_points(
    tmp_path_factory: pytest.TempPathFactory, k: int, how: str, where: float
) -> None:
    from gofr_common.backup.chain_verify import verify_chain
    from gofr_common.backup.verify import verify_archive

    base = _five(tmp_path_factory)
    root = tmp_path_factory.mktemp("case")
    backups = root / "backups"
    shutil.copytree(base / "backups", backups)
    es = [x for x in manifest(backups)]
    es.sort(key=lambda e: e["created"])
    target = backups / es[k]["path"]
    if how == "flip":
        flip_byte(target, int(where * target.stat().st_size))
    elif how == "delete file":
        target.unlink()
    elif how == "drop entry":
        Manifest(backups).update(
            lambda xs: xs.remove(next(x for x in xs if x["filename"] == es[k]["filename"]))
        )
    else:  # the manifest names another checksum for k, and its child's link agrees with the lie
        lie = "0" * 64
        Manifest(backups).set_fields(es[k]["path"], sha256=lie)
        if k + 1 < len(es):
            Manifest(backups).set_fields(
                es[k + 1]["path"], parent={"filename": es[k]["filename"], "sha256": lie}
            )
    entries = manifest(backups)
    lay = BackupConfig.from_env(env=env_for(base / "data", backups)).layout
    by_path = {e["path"]: e for e in entries}

    def one(p: Path) -> Any:
        e = by_path.get(lay.rel(p))
        return verify_archive(p, e.get("sha256") if e else None)

    for i, e in enumerate(es):
        point = by_path.get(e["path"])
        if point is None:
            continue  # its entry was dropped: not a restore point any more
        rep = verify_chain(entries, point, lay, one, snapshots=False)
        if i < k:
            assert rep.ok, (i, k, how, rep.broken)
        else:
            assert not rep.ok and es[k]["filename"] in str(rep.broken), (i, k, how, rep.broken)


_FIVE: dict[str, Path] = {}


def _five(factory: pytest.TempPathFactory) -> Path:
    """One chain of five archives, written once for every example (each works on a copy)."""
    if "root" not in _FIVE:
        root = factory.mktemp("five")
        make_tree(root / "data")
        build_chain(root / "data", root / "backups", 5)
        _FIVE["root"] = root
    return _FIVE["root"]
