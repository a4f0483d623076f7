"""Issue 12, restore items 1, 2, 3, 4, 6 and 14: no quiet data loss on restore.

Every test here reproduced a loss (or a refusal of a good archive) on the code before the fix; the
comment on each names the case. Real files, the CLI as a subprocess, real unreadable files (root
without its DAC capabilities, as a non-root backup user would see them).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from gofrtest import cli_env, craft_archive, needs, run_cli, snapshot, tinfo, without_dac, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_integrity import HOSTILE

from gofr_common.backup import BackupConfig, BackupService
from gofr_common.backup.restore import RestoreRequest, run_restore
from gofr_common.backup.verify import verify_archive

ARCHIVE = "gofr-plot_daily_20260101_020000.tar.gz"


def _now(env: dict[str, str]) -> dict[str, Any]:
    r = run_cli("now", "--json", env=env)
    assert r.returncode in (0, 3), r.stderr
    return json.loads(r.stdout)


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in r.stderr.strip().splitlines() if " WARNING manifest " not in ln]  # a rebuild
    assert len(lines) == 1 and lines[0].startswith("gofr-backup: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


# -- item 6 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("only", ["", ",,", " , "])
def test_an_empty_only_selection_is_an_error(app: dict[str, Any], only: str) -> None:
    # issue 12 item 6: `--only ''` (or `--only ,,`) restored every path in place
    e = _now(app["env"])
    (app["data"] / "config.json").write_text("live change")
    (app["data"] / "storage" / "new.txt").write_text("not in the backup")
    before = snapshot(app["data"].parent)
    for extra in ([], ["--dry-run"]):
        r = run_cli("restore", e["filename"], "--only", only, "--yes", *extra, env=app["env"])
        assert r.returncode == 2, r.stdout + r.stderr
        assert "--only" in _one_line(r) and "empty" in r.stderr
    assert snapshot(app["data"].parent) == before


# -- item 14 ---------------------------------------------------------------------------------------
def test_a_missing_sidecar_falls_back_to_the_manifest_checksum(app: dict[str, Any]) -> None:
    # issue 12 item 14: a missing .sha256 made an intact archive unrestorable
    e = _now(app["env"])
    a = app["backups"] / e["path"]
    side = a.with_name(a.name + ".sha256")
    good = side.read_text()
    side.unlink()
    v = run_cli("verify", a.name, env=app["env"])
    assert v.returncode == 0, v.stdout + v.stderr
    assert "manifest" in v.stdout and ".sha256" in v.stdout
    target = app["tmp"] / "copy"
    r = run_cli("restore", a.name, "--target", str(target), "--yes", env=app["env"])
    assert r.returncode == 0, r.stderr
    assert "manifest" in r.stderr and ".sha256" in r.stderr  # it says which checksum it used
    assert snapshot(target / "storage") == snapshot(app["data"] / "storage")
    # the manifest's checksum is still checked: a damaged archive without a sidecar is refused
    b = bytearray(a.read_bytes())
    b[len(b) // 2] ^= 1
    damaged = bytes(b)
    original = a.read_bytes()
    a.write_bytes(damaged)
    r = run_cli("restore", a.name, "--target", str(app["tmp"] / "copy2"), "--yes", env=app["env"])
    assert r.returncode == 1 and "checksum mismatch" in r.stderr
    assert not (app["tmp"] / "copy2" / "storage").exists()
    # --repair refuses to bless a damaged archive ...
    rp = run_cli("verify", "--repair", a.name, env=app["env"])
    assert rp.returncode == 1 and not side.exists(), rp.stdout + rp.stderr
    # ... and rewrites a missing or damaged sidecar of an intact one
    a.write_bytes(original)
    rp = run_cli("verify", "--repair", a.name, env=app["env"])
    assert rp.returncode == 0, rp.stdout + rp.stderr
    assert side.read_text() == good
    side.write_text("0" * 64 + f"  {a.name}\n")
    assert run_cli("verify", a.name, env=app["env"]).returncode == 1
    assert run_cli("verify", "--repair", a.name, env=app["env"]).returncode == 0
    assert side.read_text() == good
    assert run_cli("verify", a.name, env=app["env"]).returncode == 0
    # without a checksum in the manifest there is nothing to repair against
    doc = json.loads((app["backups"] / "manifest.json").read_text())
    for x in doc["backups"]:
        x["sha256"] = None
    (app["backups"] / "manifest.json").write_text(json.dumps(doc))
    side.unlink()
    rp = run_cli("verify", "--repair", a.name, env=app["env"])
    assert rp.returncode == 1 and "manifest" in rp.stdout + rp.stderr and not side.exists()
    r = run_cli("restore", a.name, "--target", str(app["tmp"] / "copy3"), "--yes", env=app["env"])
    assert r.returncode == 1 and "checksum file missing" in r.stderr
    bad = run_cli("verify", "--repair", "--all", env=app["env"])
    assert bad.returncode == 2


# -- item 1 ----------------------------------------------------------------------------------------
def _incomplete_setup(tmp: Path) -> tuple[Path, dict[str, str], Path, Path]:
    needs(
        os.geteuid() == 0 and bool(shutil.which("setpriv")),
        "needs root and setpriv to create files the backup process cannot read",
    )
    data = tmp / "data"
    write(data / "s" / "ok.txt", "fine")
    secret = write(data / "s" / "secret.txt", "the app's secret, v1", 0o600)
    private = data / "s" / "private"
    write(private / "inner.txt", "inside an unreadable dir")
    os.chmod(private, 0o700)
    env = cli_env(data, tmp / "b", **{"GOFR_{P}_BACKUP_PATHS": "s:s"})
    return data, env, secret, private


def _backup_without_dac(env: dict[str, str]) -> dict[str, Any]:
    r = subprocess.run(without_dac("now", "--json"), env=env, capture_output=True, text=True)
    assert r.returncode in (0, 3), r.stderr
    return json.loads(r.stdout)


def test_latest_chooses_the_newest_complete_and_verified_archive(tmp_path: Path) -> None:
    # issue 12 item 1: `restore --latest --yes` took an incomplete archive and deleted live files
    data, env, secret, private = _incomplete_setup(tmp_path)
    complete = _backup_without_dac(env)  # root owns everything: readable
    assert complete["complete"] is True
    time.sleep(1.1)
    for p in (secret, private, private / "inner.txt"):
        os.chown(p, 1000, 1000)
    incomplete = _backup_without_dac(env)
    assert incomplete["complete"] is False and incomplete["verified"] is True
    secret.write_text("the app's secret, v2")
    dry = run_cli("restore", "--latest", "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["archive"] == complete["filename"]
    r = run_cli("restore", "--latest", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert complete["filename"] in r.stdout
    assert secret.read_text() == "the app's secret, v1" and (private / "inner.txt").exists()
    # the interactive menu points at the same archive, and Enter takes it
    m = run_cli("restore", "--interactive", "--dry-run", env=env, input="\n")
    assert m.returncode == 0, m.stderr
    assert complete["filename"] in m.stdout and "INCOMPLETE" in m.stderr
    # an unverified archive is not chosen either
    doc = json.loads((tmp_path / "b" / "manifest.json").read_text())
    for x in doc["backups"]:
        x["verified"] = None
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(doc))
    r = run_cli("restore", "--latest", "--dry-run", env=env)
    assert r.returncode == 1 and "complete" in r.stderr and "verif" in r.stderr


def test_an_incomplete_archive_needs_the_flag_and_keeps_what_it_never_saved(tmp_path: Path) -> None:
    # issue 12 item 1: restoring an incomplete archive in place removed the files it could not read
    data, env, secret, private = _incomplete_setup(tmp_path)
    for p in (secret, private, private / "inner.txt"):
        os.chown(p, 1000, 1000)
    e = _backup_without_dac(env)
    assert e["complete"] is False
    secret.write_text("the app's secret, v2")
    write(private / "later.txt", "written after the backup")
    (data / "s" / "ok.txt").write_text("changed")
    before = snapshot(data)
    for extra in ([], ["--dry-run"]):
        r = run_cli("restore", e["filename"], "--yes", *extra, env=env)
        assert r.returncode == 2, r.stdout + r.stderr
        line = _one_line(r)
        assert "incomplete" in line and "--allow-incomplete" in line
        assert "secret.txt" in line and "private" in line
    assert snapshot(data) == before
    dry = run_cli("restore", e["filename"], "--allow-incomplete", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "INCOMPLETE" in dry.stdout
    kept = [ln for ln in dry.stdout.splitlines() if ln.strip().startswith("keep")]
    assert {ln.split()[-1] for ln in kept} == {"s/secret.txt", "s/private"}, dry.stdout
    assert "s/private/later.txt" not in dry.stdout  # kept with its directory, never "remove"
    j = json.loads(
        run_cli("restore", e["filename"], "--allow-incomplete", "--dry-run", "--json", env=env).stdout
    )
    assert j["incomplete"] is True and j["targets"][0]["kept"] == ["s/private", "s/secret.txt"]
    # the confirmation prompt says so too
    p = run_cli("restore", "--allow-incomplete", "--interactive", env=env, input="1\nn\n")
    assert p.returncode == 1 and "INCOMPLETE" in p.stderr and "s/secret.txt" in p.stderr
    assert snapshot(data) == before
    r = run_cli("restore", e["filename"], "--allow-incomplete", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert (data / "s" / "ok.txt").read_text() == "fine"
    assert secret.read_text() == "the app's secret, v2"  # left as it was, never deleted
    assert (private / "inner.txt").exists() and (private / "later.txt").exists()
    after = snapshot(data)
    for rel in ("s/secret.txt", "s/private", "s/private/inner.txt", "s/private/later.txt"):
        assert after[rel] == before[rel], rel
    assert not list(data.rglob(".gofr-restore-*"))


def test_an_end_marker_that_says_incomplete_is_believed(app: dict[str, Any]) -> None:
    # issue 12 item 1: the manifest (rebuilt: no `complete`) and the archive's own end marker
    # disagree; the restore trusts the more cautious of the two
    storage = app["data"] / "storage"
    a = craft_archive(
        app["backups"] / "daily" / ARCHIVE,
        [tinfo("storage", tarfile.DIRTYPE), tinfo("storage/doc1.json", data=b"{}")],
        meta_extra={"resolved_paths": {"storage": str(storage)}},
        end={"complete": False, "unreadable": [str(storage / "ünïcødé – файл.txt")]},
    )
    before = snapshot(app["data"])
    r = run_cli("restore", a.name, "--only", "storage", "--yes", env=app["env"])
    assert r.returncode == 2 and "ünïcødé – файл.txt" in _one_line(r), r.stderr
    # even when the manifest says complete
    doc = json.loads((app["backups"] / "manifest.json").read_text())
    doc["backups"][0]["complete"] = True
    (app["backups"] / "manifest.json").write_text(json.dumps(doc))
    r = run_cli("restore", a.name, "--only", "storage", "--yes", env=app["env"])
    assert r.returncode == 2 and "incomplete" in _one_line(r), r.stderr
    assert snapshot(app["data"]) == before
    r = run_cli("restore", a.name, "--only", "storage", "--allow-incomplete", "--yes", env=app["env"])
    assert r.returncode == 0, r.stderr
    assert (storage / "ünïcødé – файл.txt").read_text() == "non-ascii name\n"
    assert not (storage / "nested").exists()  # the rest is restored as the archive says


# -- item 2 ----------------------------------------------------------------------------------------
def test_links_that_point_outside_are_data_and_come_back_as_links(app: dict[str, Any]) -> None:
    # issue 12 item 2: one link to /etc/hostname made a verified, HEALTHY archive unrestorable
    storage = app["data"] / "storage"
    os.symlink("/etc/hostname", storage / "host")
    os.symlink("../../outside-x", storage / "nested" / "up")
    os.symlink("/nonexistent/dir/file", storage / "abs-dangling")
    e = _now(app["env"])
    assert e["verified"] is True
    before = snapshot(storage)
    target = app["tmp"] / "copy"
    r = run_cli("restore", e["filename"], "--target", str(target), "--yes", env=app["env"])
    assert r.returncode == 0, r.stderr
    assert snapshot(target / "storage") == before
    assert os.readlink(target / "storage" / "host") == "/etc/hostname"
    for p in (storage / "host", storage / "nested" / "up"):
        p.unlink()
    r = run_cli("restore", e["filename"], "--yes", env=app["env"])
    assert r.returncode == 0, r.stderr
    assert snapshot(storage) == before


NAMES = [
    "a",
    "b c",
    "new\nline",
    "ünï",
    "-dash",
    "...",
    "x" * 90,
    "tab\there",
    "back\\slash",
    "q?*[",
    "é.txt",
]
LINK_KINDS = ["absolute", "absolute-dangling", "inside", "outward", "dangling", "chained", "self", "dir"]


@st.composite
def trees(draw: st.DrawFn) -> list[tuple[str, str, str]]:
    """(kind, relative path, detail) in creation order."""
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["dir", "file", "file", "hard", "sym", "sym"]),
                st.integers(0, 1000),
                st.sampled_from(NAMES),
                st.sampled_from(LINK_KINDS),
            ),
            min_size=1,
            max_size=14,
        )
    )
    dirs, files, links, out, used = [""], [], [], [], set()
    for kind, i, name, lk in ops:
        parent = dirs[i % len(dirs)]
        rel = f"{parent}/{name}" if parent else name
        if rel in used:
            continue
        depth = rel.count("/")
        if kind == "dir":
            dirs.append(rel)
            out.append(("dir", rel, ""))
        elif kind == "file":
            files.append(rel)
            out.append(("file", rel, str(i)))
        elif kind == "hard" and files:
            out.append(("hard", rel, files[i % len(files)]))
        elif kind == "sym":
            anything = files + dirs[1:] + links
            target = {
                "absolute": "/etc/hostname",
                "absolute-dangling": "/nonexistent/x",
                "inside": os.path.relpath(anything[i % len(anything)], parent or ".") if anything else "x",
                "outward": "../" * (depth + 1 + i % 3) + "outside",
                "dangling": "does-not-exist",
                "chained": os.path.relpath(links[i % len(links)], parent or ".") if links else "..",
                "self": name,
                "dir": "." if i % 2 else "..",
            }[lk]
            links.append(rel)
            out.append(("sym", rel, target))
        else:
            continue
        used.add(rel)
    return out


def _build(root: Path, ops: list[tuple[str, str, str]]) -> None:
    root.mkdir(parents=True)
    for kind, rel, detail in ops:
        p = root / rel
        if kind == "dir":
            p.mkdir()
            os.chmod(p, 0o750)
        elif kind == "file":
            p.write_bytes(hashlib.sha256(detail.encode()).digest() * int(detail) if detail else b"")
            os.chmod(p, 0o640)
            os.utime(p, (1_700_000_000 + int(detail), 1_700_000_000 + int(detail)))
        elif kind == "hard":
            os.link(root / detail, p)
        else:
            os.symlink(detail, p)


EXAMPLES = int(
    os.environ.get("GOFR_TREE_EXAMPLES", "1000" if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else "25")
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(trees())
def test_every_archive_that_verifies_restores_to_an_equal_tree(tmp_path: Path, ops: Any) -> None:
    # issue 12 item 2: an archive this tool wrote that passes verify must be restorable by it
    import tempfile

    base = Path(tempfile.mkdtemp(dir=tmp_path))  # hypothesis runs many examples in one tmp_path
    data = base / "data"
    _build(data / "top", ops)
    env = cli_env(data, base / "b", **{"GOFR_{P}_BACKUP_PATHS": "t:top"})
    cfg = BackupConfig.from_env(env=env)
    out = BackupService(cfg).run_backup()
    assert out.status == "ok", out.error
    assert out.path is not None and verify_archive(out.path).ok
    want = snapshot(data / "top")
    run_restore(cfg, RestoreRequest(name=out.path.name, target=base / "copy"))
    assert snapshot(base / "copy" / "t") == want
    # and in place, over a tree that has moved on
    shutil.rmtree(data / "top")
    (data / "top").mkdir()
    (data / "top" / "stray").write_text("not in the backup")
    run_restore(cfg, RestoreRequest(name=out.path.name))
    assert snapshot(data / "top") == want


# -- item 3 ----------------------------------------------------------------------------------------
CHAIN = [
    tinfo("storage", tarfile.DIRTYPE),
    tinfo("storage/sub", tarfile.DIRTYPE),
    tinfo("storage/sub/a", tarfile.SYMTYPE, linkname="b/../.."),
    tinfo("storage/sub/b", tarfile.SYMTYPE, linkname=".."),
]


def test_a_link_chain_is_restored_as_links_and_reported_by_its_final_resolution(app: dict[str, Any]) -> None:
    # issue 12 item 3: `a -> b/../..` then `b -> ..` passed the per-link check and ended up pointing
    # two levels up without anyone being told; links are data, but the plan names where they lead
    a = craft_archive(app["backups"] / "daily" / ARCHIVE, CHAIN)
    target = app["tmp"] / "copy"
    dry = run_cli("restore", a.name, "--target", str(target), "--dry-run", env=app["env"])
    assert dry.returncode == 0, dry.stderr
    assert "storage/sub/a" in dry.stdout and "outside" in dry.stdout
    assert "storage/sub/b" not in dry.stdout.split("outside", 1)[1]  # b resolves inside storage
    r = run_cli("restore", a.name, "--target", str(target), "--yes", env=app["env"])
    assert r.returncode == 0, r.stderr
    assert os.readlink(target / "storage" / "sub" / "a") == "b/../.."
    assert os.readlink(target / "storage" / "sub" / "b") == ".."


@pytest.mark.parametrize("order", ["before", "after"])
def test_nothing_is_ever_written_below_a_link_whatever_the_order(app: dict[str, Any], order: str) -> None:
    # issue 12 item 3: with delayed links a member below a link must be refused wherever it comes
    below = tinfo("storage/sub/a/escaped.txt")
    members = [*CHAIN[:2], below, *CHAIN[2:]] if order == "before" else [*CHAIN, below]
    a = craft_archive(app["backups"] / "daily" / ARCHIVE, members)
    target = app["tmp"] / "copy"
    for extra in (["--dry-run"], ["--yes"]):
        r = run_cli("restore", a.name, "--target", str(target), *extra, env=app["env"])
        assert r.returncode == 1 and "refusing" in r.stderr and "symlink" in r.stderr, r.stderr
    assert not (target / "storage").exists() and not list(app["tmp"].rglob("escaped.txt"))


def test_a_nested_path_is_never_restored_through_a_link_chain(tmp_path: Path) -> None:
    # issue 12 item 3: data:. restored a chain that makes data/storage lead outside; the nested
    # path storage:storage was then silently not restored (its staging vanished with the old tree)
    data = tmp_path / "app" / "data"
    write(data / "storage" / "f.txt", "live storage")
    write(data / "top.txt", "live top")
    env = cli_env(data, tmp_path / "b", **{"GOFR_{P}_BACKUP_PATHS": "data:.,storage:storage"})
    a = craft_archive(
        tmp_path / "b" / "daily" / ARCHIVE,
        [
            tinfo("data", tarfile.DIRTYPE),
            tinfo("data/storage", tarfile.SYMTYPE, linkname="sub/a/elsewhere"),
            tinfo("data/sub", tarfile.DIRTYPE),
            tinfo("data/sub/a", tarfile.SYMTYPE, linkname="b/../.."),
            tinfo("data/sub/b", tarfile.SYMTYPE, linkname=".."),
            tinfo("storage", tarfile.DIRTYPE),
            tinfo("storage/f.txt", data=b"archived storage"),
        ],
        paths={"data": ".", "storage": "storage"},
    )
    before = snapshot(tmp_path / "app")
    for extra in (["--dry-run"], ["--yes"]):
        r = run_cli("restore", a.name, *extra, env=env)
        assert r.returncode == 1 and "symlink" in r.stderr and "storage" in r.stderr, r.stdout + r.stderr
    assert snapshot(tmp_path / "app") == before


# -- item 4 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(HOSTILE))
def test_dry_run_refuses_what_the_restore_refuses(app: dict[str, Any], kind: str) -> None:
    # issue 12 item 4: --dry-run only verified the checksum and said "would restore"
    a = craft_archive(app["backups"] / "daily" / ARCHIVE, HOSTILE[kind])
    target = app["tmp"] / "restore-target"
    dry = run_cli("restore", a.name, "--target", str(target), "--dry-run", env=app["env"])
    real = run_cli("restore", a.name, "--target", str(target), "--yes", env=app["env"])
    assert real.returncode == 1 and "refusing" in real.stderr
    assert dry.returncode == real.returncode and "refusing" in dry.stderr, dry.stdout + dry.stderr
    assert not target.exists() or not any(target.iterdir())


def test_dry_run_reports_changes_truthfully_and_agrees_with_the_restore(app: dict[str, Any]) -> None:
    # issue 12 item 4: every existing file was reported as "replace", changed or not
    e = _now(app["env"])
    dry = json.loads(run_cli("restore", e["filename"], "--dry-run", "--json", env=app["env"]).stdout)
    for t in dry["targets"]:
        assert (t["created"], t["replaced"], t["removed"]) == ([], [], []), t
    storage = app["data"] / "storage"
    doc = storage / "doc1.json"
    st0 = doc.stat()
    doc.write_text(doc.read_text().replace("hello", "HELLO"))  # same size, same mtime: content differs
    os.utime(doc, ns=(st0.st_atime_ns, st0.st_mtime_ns))
    os.utime(storage / "exec.sh", (1_600_000_000, 1_600_000_000))  # only the mtime
    os.chmod(storage / "read-only.txt", 0o600)  # only the mode
    os.unlink(storage / "link-to-doc")
    os.symlink("exec.sh", storage / "link-to-doc")  # a link with another target
    (storage / "extra.txt").write_text("x")
    (app["data"] / "auth" / "tokens.json").unlink()
    dry = run_cli("restore", e["filename"], "--dry-run", "--json", env=app["env"])
    plan = {t["name"]: t for t in json.loads(dry.stdout)["targets"]}
    assert sorted(plan["storage"]["replaced"]) == [
        "storage/doc1.json",
        "storage/exec.sh",
        "storage/link-to-doc",
        "storage/read-only.txt",
    ]
    assert plan["storage"]["removed"] == ["storage/extra.txt"] and plan["storage"]["created"] == []
    assert plan["auth"]["created"] == ["auth/tokens.json"] and plan["auth"]["replaced"] == []
    assert (plan["cfg"]["replaced"], plan["logs"]["replaced"]) == ([], [])
    real = run_cli("restore", e["filename"], "--yes", "--json", env=app["env"])
    assert real.returncode == 0, real.stderr
    done = {t["name"]: t for t in json.loads(real.stdout)["targets"]}
    for n, t in plan.items():
        for k in ("created", "replaced", "removed"):
            assert done[n][k] == t[k], (n, k)


# -- the hostile pass: what a new user runs into ----------------------------------------------------
def test_paths_nested_in_each_other_restore_in_place(tmp_path: Path) -> None:
    # data:. and storage:storage: the inner path's staging goes into the outer one's, one swap
    data = tmp_path / "app" / "data"
    write(data / "storage" / "f.txt", "storage file")
    write(data / "top.txt", "top file")
    os.symlink("storage/f.txt", data / "link")
    env = cli_env(data, tmp_path / "b", **{"GOFR_{P}_BACKUP_PATHS": "data:.,storage:storage"})
    e = _now(env)
    want = snapshot(data)
    shutil.rmtree(data / "storage")
    write(data / "storage" / "g.txt", "new")
    (data / "top.txt").write_text("changed")
    dry = json.loads(run_cli("restore", e["filename"], "--dry-run", "--json", env=env).stdout)
    plan = {t["name"]: t for t in dry["targets"]}
    assert plan["storage"]["removed"] == ["storage/g.txt"] and plan["storage"]["created"] == ["storage/f.txt"]
    assert not any(n.startswith("data/storage") for k in ("created", "removed") for n in plan["data"][k])
    r = run_cli("restore", e["filename"], "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert snapshot(data) == want
    assert not list(tmp_path.rglob(".gofr-restore-*"))


def test_paths_nested_in_a_mount_point(tmp_path: Path) -> None:
    needs(os.geteuid() == 0, "mounting a tmpfs needs root")
    data = tmp_path / "app" / "data"
    data.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(data)], capture_output=True)
    needs(r.returncode == 0, "cannot mount tmpfs here")
    try:
        write(data / "storage" / "sub" / "f.txt", "storage file")
        write(data / "top.txt", "top file")
        env = cli_env(data, tmp_path / "b", **{"GOFR_{P}_BACKUP_PATHS": "data:.,storage:storage"})
        e = _now(env)
        want = snapshot(data)
        shutil.rmtree(data / "storage" / "sub")
        write(data / "extra.txt", "not in the backup")
        r = run_cli("restore", e["filename"], "--yes", env=env)
        assert r.returncode == 0, r.stderr
        got = snapshot(data)
        assert {k: v for k, v in got.items() if k != "."} == {k: v for k, v in want.items() if k != "."}
        assert not list(data.glob(".gofr-restore-*"))
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def test_a_target_that_is_a_file_is_a_usage_error(app: dict[str, Any]) -> None:
    e = _now(app["env"])
    f = write(app["tmp"] / "a-file", "x")
    r = run_cli("restore", e["filename"], "--target", str(f), "--yes", env=app["env"])
    assert r.returncode == 2 and "not a directory" in _one_line(r)
    assert f.read_text() == "x"


def test_the_backup_dir_inside_a_restored_path_is_left_alone(tmp_path: Path) -> None:
    # data:. with the backup dir inside the data dir: a restore used to replace the backup dir by
    # its old copy in the archive, deleting every archive made since
    data = tmp_path / "data"
    write(data / "doc.txt", "v1")
    backups = data / "backups"
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "data:."})
    first = _now(env)
    (data / "doc.txt").write_text("v2")
    time.sleep(1.1)
    second = _now(env)
    before = snapshot(backups)
    r = run_cli("restore", first["filename"], "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert (data / "doc.txt").read_text() == "v1"
    assert (backups / second["path"]).is_file()
    after = snapshot(backups)
    assert {k: v for k, v in after.items() if "manifest" not in k and ".lock" not in k} == {
        k: v for k, v in before.items() if "manifest" not in k and ".lock" not in k
    }


def test_a_symlink_that_replaced_a_directory_is_not_followed(app: dict[str, Any]) -> None:
    storage = app["data"] / "storage"
    e = _now(app["env"])
    outside = app["tmp"] / "outside"
    shutil.copytree(storage / "nested", outside)  # the same files, outside the data
    shutil.rmtree(storage / "nested")
    os.symlink(str(outside), storage / "nested")
    before_outside = snapshot(outside)
    dry = json.loads(
        run_cli("restore", e["filename"], "--only", "storage", "--dry-run", "--json", env=app["env"]).stdout
    )
    t = dry["targets"][0]
    assert "storage/nested/deep/blob.bin" in t["created"] and "storage/nested" in t["replaced"]
    r = run_cli("restore", e["filename"], "--only", "storage", "--yes", env=app["env"])
    assert r.returncode == 0, r.stderr
    assert (storage / "nested").is_dir() and not (storage / "nested").is_symlink()
    assert snapshot(outside) == before_outside
    # a configured path whose parent is a symlink now is refused: the restore would write through it
    env = {**app["env"], "GOFR_PLOT_BACKUP_PATHS": "deep:storage/nested/deep"}
    e2 = _now(env)
    shutil.rmtree(storage / "nested")
    os.symlink(str(outside), storage / "nested")
    r = run_cli("restore", e2["filename"], "--yes", env=env)
    assert r.returncode == 2 and "symlink" in _one_line(r)
    assert snapshot(outside) == before_outside


def test_a_staging_directory_in_an_archive_or_on_disk_is_never_followed(app: dict[str, Any]) -> None:
    # a restore's staging caught by a backup (or planted) must not become a journal that the next
    # restore's recovery follows: it is not restored, and a journal reaching elsewhere is refused
    evil = json.dumps(
        {"format": 1, "targets": [{"name": "x", "dest": "/etc", "base": "/tmp/y", "entries": [], "keep": []}]}
    ).encode()
    a = craft_archive(
        app["backups"] / "daily" / ARCHIVE,
        [
            tinfo("storage", tarfile.DIRTYPE),
            tinfo("storage/ok.txt", data=b"ok"),
            tinfo("storage/.gofr-restore-x-1", tarfile.DIRTYPE),
            tinfo("storage/.gofr-restore-x-1/journal.json", data=evil),
        ],
    )
    target = app["tmp"] / "copy"
    r = run_cli("restore", a.name, "--target", str(target), "--yes", env=app["env"])
    assert r.returncode == 0, r.stderr
    assert (target / "storage" / "ok.txt").exists() and not (
        target / "storage" / ".gofr-restore-x-1"
    ).exists()
    assert "not restored" in r.stderr
    planted = app["data"] / ".gofr-restore-storage-1"
    write(planted / "journal.json", evil)
    (planted / "journal-at").write_text(str(planted / "journal.json"))
    before = snapshot(app["data"])
    r = run_cli("restore", a.name, "--only", "storage", "--yes", env=app["env"])
    assert r.returncode == 1 and "journal" in _one_line(r)
    assert snapshot(app["data"]) == before


def test_an_incomplete_archive_of_nested_paths_keeps_what_it_never_saved(tmp_path: Path) -> None:
    # item 1 with item 3's nesting: the inner path's unreadable file is kept by the outer swap
    data, env, secret, private = _incomplete_setup(tmp_path)
    env = {**env, "GOFR_PLOT_BACKUP_PATHS": "data:.,s:s"}
    for p in (secret, private, private / "inner.txt"):
        os.chown(p, 1000, 1000)
    e = _backup_without_dac(env)
    assert e["complete"] is False
    secret.write_text("the app's secret, v2")
    (data / "s" / "ok.txt").write_text("changed")
    before = snapshot(data)
    r = run_cli("restore", e["filename"], "--allow-incomplete", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    after = snapshot(data)
    assert (data / "s" / "ok.txt").read_text() == "fine"
    for rel in ("s/secret.txt", "s/private", "s/private/inner.txt"):
        assert after[rel] == before[rel], rel
    assert not list(tmp_path.rglob(".gofr-restore-*"))


@pytest.mark.parametrize("fallback", [False, True], ids=["exchange", "two-renames"])
def test_an_incomplete_archive_of_a_mount_point_keeps_what_it_never_saved(
    tmp_path: Path, fallback: bool
) -> None:
    data, env, secret, private = _incomplete_setup(tmp_path)
    shutil.rmtree(data)
    data.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(data)], capture_output=True)
    needs(r.returncode == 0, "cannot mount tmpfs here")
    try:
        data2, env, secret, private = _incomplete_setup(tmp_path)
        env = {
            **env,
            "GOFR_PLOT_BACKUP_PATHS": "data:.",
            **({"GOFR_BACKUP_TEST_NO_EXCHANGE": "1"} if fallback else {}),
        }
        write(data / "top-secret.txt", "unreadable at the top", 0o600)
        for p in (secret, private, private / "inner.txt", data / "top-secret.txt"):
            os.chown(p, 1000, 1000)
        e = _backup_without_dac(env)
        assert e["complete"] is False
        secret.write_text("v2")
        (data / "top-secret.txt").write_text("v2 at the top")
        (data / "s" / "ok.txt").write_text("changed")
        write(data / "extra.txt", "not in the backup")
        before = snapshot(data)
        r = run_cli("restore", e["filename"], "--allow-incomplete", "--yes", env=env)
        assert r.returncode == 0, r.stderr
        after = snapshot(data)
        assert (data / "s" / "ok.txt").read_text() == "fine" and not (data / "extra.txt").exists()
        for rel in ("s/secret.txt", "s/private", "s/private/inner.txt", "top-secret.txt"):
            assert after[rel] == before[rel], rel
        assert not list(data.glob(".gofr-restore-*"))
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def test_a_followed_paths_link_is_restored_through_not_replaced(tmp_path: Path) -> None:
    # issue 12 item 7, restore side: a PATHS entry that is a symlink is followed by the backup; an
    # in-place restore used to replace the link by a directory and leave what it points at stale
    data = tmp_path / "data"
    write(data / "real" / "f.txt", "one")
    os.symlink("real", data / "linkdir")
    env = cli_env(data, tmp_path / "backups", **{"GOFR_{P}_BACKUP_PATHS": "ld:linkdir"})
    assert run_cli("now", env=env).returncode == 0
    write(data / "real" / "f.txt", "two")
    write(data / "real" / "extra.txt", "not in the backup")
    r = run_cli("restore", "--latest", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert os.readlink(data / "linkdir") == "real"  # the link is kept
    assert (data / "real" / "f.txt").read_text() == "one" and not (data / "real" / "extra.txt").exists()
    # pointed elsewhere since the backup: refused, nothing written through it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.unlink(data / "linkdir")
    os.symlink(elsewhere, data / "linkdir")
    r = run_cli("restore", "--latest", "--yes", env=env)
    assert r.returncode == 2 and "symlink to" in r.stderr and "followed it to" in r.stderr, r.stderr
    assert list(elsewhere.iterdir()) == []
