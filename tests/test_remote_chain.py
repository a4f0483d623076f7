"""Off-site copies of chains (issue 17), against a real S3 server on 127.0.0.1 (`rclone serve s3`):
``sync`` uploads incrementals as they are (never their ``.snap``), the remote manifest keeps
``kind``/``parent``/``full``, the report says the bytes uploaded in the run, and fetching a chain
back (offsite.fetched_chain) gets every archive from the full, checked, or refuses in one line
when the remote lacks one of them."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from gofrtest import run_cli
from gofrtest import snapshot as tree
from test_remote import S3Server, _env, _keypair, s3  # noqa: F401  (s3 is a fixture)
from test_verify_chain import add_day, build_chain, flip_byte

from gofr_common.backup.errors import VerifyError
from gofr_common.backup.manifest import Entry
from gofr_common.backup.offsite import fetched_chain, find_remote
from gofr_common.backup.remote import remote_for

TAR = shutil.which("tar")
# the chains are dated March 2026: remote retention must not take them for old
KEEP = {"GOFR_{P}_BACKUP_REMOTE_RETENTION_DAYS": "36500"}


def _remote_manifest(srv: S3Server) -> list[dict]:  # type: ignore[type-arg]
    return json.loads((srv.data / "backups" / "off" / "plot" / "manifest.json").read_text())["backups"]


def _gnu_restore(archives: list[Path], dest: Path) -> None:
    assert TAR is not None
    dest.mkdir()
    for a in archives:
        r = subprocess.run(
            [TAR, "--listed-incremental=/dev/null", "-xf", str(a)], cwd=dest, capture_output=True, text=True
        )
        assert r.returncode == 0 and "Cannot" not in r.stderr, r.stderr


def test_sync_uploads_a_chain_without_its_snap_files_and_says_the_bytes(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
) -> None:
    data, env = _env(tmp_path / "app", s3, **KEEP)
    backups = tmp_path / "backups"
    _, es = build_chain(data, backups, 3, env)
    r = run_cli("sync", "--json", env=env)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    names = [e["filename"] for e in es]
    assert rep["uploaded"] == names
    sizes = [(backups / e["path"]).stat().st_size for e in es]
    assert rep["uploaded_bytes"] == sum(sizes)
    assert s3.objects() == sorted(
        [f"daily/{n}" for n in names] + [f"daily/{n}.sha256" for n in names] + ["manifest.json"]
    )
    assert all((backups / e["path"]).with_name(e["filename"] + ".snap").exists() for e in es)  # there locally
    remote = {e["filename"]: e for e in _remote_manifest(s3)}
    for e in es:
        assert {k: remote[e["filename"]][k] for k in ("kind", "parent", "full", "sha256")} == {
            k: e[k] for k in ("kind", "parent", "full", "sha256")
        }
    # the next day: only the new incremental goes up, and the run's bytes are its size
    nxt = add_day(data, backups, env, es, 3)
    r = run_cli("sync", "--json", env=env)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["uploaded"] == [nxt["filename"]]
    assert rep["uploaded_bytes"] == (backups / nxt["path"]).stat().st_size
    assert "snap" not in " ".join(s3.objects())
    r = run_cli("sync", env=env)
    assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith("0 uploaded (0 B), 0 deleted"), r.stdout


def test_per_day_offsite_bytes_drop_with_churn(tmp_path: Path, s3: S3Server) -> None:  # noqa: F811
    data, env = _env(tmp_path / "app", s3, **KEEP)
    backups = tmp_path / "backups"
    per_day = []
    es: list[Entry] = []
    for d in range(3):
        add_day(data, backups, env, es, d)
        r = run_cli("sync", "--json", env=env)
        assert r.returncode == 0, r.stderr
        per_day.append(json.loads(r.stdout)["uploaded_bytes"])
    assert per_day[0] > 10 * max(per_day[1:]) > 0, per_day  # the full, then what changed


def test_a_chain_is_fetched_whole_and_checked(tmp_path: Path, s3: S3Server) -> None:  # noqa: F811
    data, env = _env(tmp_path / "app", s3, **KEEP)
    backups = tmp_path / "backups"
    cfg, es = build_chain(data, backups, 3, env)
    want = {n: tree(data / n) for n in ("storage", "auth")}
    assert run_cli("sync", env=env).returncode == 0
    remote = remote_for(cfg)
    assert remote is not None
    rentries = remote.read_manifest()
    point = find_remote(rentries, es[-1]["filename"])
    assert point is not None
    with fetched_chain(remote, rentries, point, None) as paths:
        assert [p.name for p in paths] == [e["filename"] for e in es]
        assert all(
            p.read_bytes() == (backups / e["path"]).read_bytes() for p, e in zip(paths, es, strict=True)
        )
        if TAR is not None:
            _gnu_restore(paths, tmp_path / "restored")
            assert {n: tree(tmp_path / "restored" / n) for n in ("storage", "auth")} == want
        tmp = paths[0].parent
    assert not tmp.exists()  # the temp dir goes with it


def test_a_chain_missing_an_archive_remotely_is_refused_in_one_line(tmp_path: Path, s3: S3Server) -> None:  # noqa: F811
    data, env = _env(tmp_path / "app", s3, **KEEP)
    backups = tmp_path / "backups"
    cfg, es = build_chain(data, backups, 3, env)
    assert run_cli("sync", env=env).returncode == 0
    obj = s3.data / "backups" / "off" / "plot" / "daily" / es[1]["filename"]
    obj.unlink()  # the object is gone, the remote manifest still lists it
    time.sleep(1.5)  # the server's directory cache
    remote = remote_for(cfg)
    assert remote is not None
    rentries = remote.read_manifest()
    point = find_remote(rentries, es[-1]["filename"])
    assert point is not None
    with (
        pytest.raises(VerifyError, match=f"{es[1]['filename']} of its chain is missing there"),
        fetched_chain(remote, rentries, point, None),
    ):
        raise AssertionError("fetched")
    before = {n: tree(data / n) for n in ("storage", "auth")}
    r = run_cli("restore", "--from-remote", es[-1]["filename"], "--yes", env=env)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert (
        f"{es[1]['filename']} of its chain is missing there" in r.stderr and "nothing was changed" in r.stderr
    )
    assert {n: tree(data / n) for n in ("storage", "auth")} == before
    # the full alone still restores (its chain is itself)
    with fetched_chain(remote, rentries, find_remote(rentries, es[0]["filename"]), None) as paths:  # type: ignore[arg-type]
        assert [p.name for p in paths] == [es[0]["filename"]]


def test_a_remote_object_replaced_or_altered_is_refused(tmp_path: Path, s3: S3Server) -> None:  # noqa: F811
    data, env = _env(tmp_path / "app", s3, **KEEP)
    backups = tmp_path / "backups"
    cfg, es = build_chain(data, backups, 3, env)
    assert run_cli("sync", env=env).returncode == 0
    obj = s3.data / "backups" / "off" / "plot" / "daily" / es[1]["filename"]
    flip_byte(obj, obj.stat().st_size // 2)
    time.sleep(1.5)
    remote = remote_for(cfg)
    assert remote is not None
    rentries = remote.read_manifest()
    point = find_remote(rentries, es[-1]["filename"])
    assert point is not None
    with (
        pytest.raises(VerifyError, match=f"refusing {es[1]['filename']}: the download has sha256"),
        fetched_chain(remote, rentries, point, None),
    ):
        raise AssertionError("fetched")
    # a remote manifest that lies along with the object: the child's own header tells
    shutil.copy2(backups / es[0]["path"], obj)  # another (sound) archive in its place
    time.sleep(1.5)
    import hashlib

    sha = hashlib.sha256(obj.read_bytes()).hexdigest()
    doc = json.loads((s3.data / "backups" / "off" / "plot" / "manifest.json").read_text())
    for e in doc["backups"]:
        if e["filename"] == es[1]["filename"]:
            e["sha256"] = sha
        if e["filename"] == es[2]["filename"]:
            e["parent"]["sha256"] = sha
    (s3.data / "backups" / "off" / "plot" / "manifest.json").write_text(json.dumps(doc))
    time.sleep(1.5)
    rentries = remote.read_manifest()
    point = find_remote(rentries, es[-1]["filename"])
    assert point is not None
    with (
        pytest.raises(
            VerifyError,
            match=f"{es[1]['filename']}'s header says it is a full, the manifest says incremental",
        ),
        fetched_chain(remote, rentries, point, None),
    ):
        raise AssertionError("fetched")


def test_an_encrypted_chain_keeps_its_links_and_is_fetched_decrypted(tmp_path: Path, s3: S3Server) -> None:  # noqa: F811
    pub, key = _keypair(tmp_path)
    data, env = _env(tmp_path / "app", s3, **KEEP, **{"GOFR_{P}_BACKUP_ENCRYPT_RECIPIENTS": pub})
    backups = tmp_path / "backups"
    cfg, es = build_chain(data, backups, 3, env)
    r = run_cli("sync", "--json", env=env)
    assert r.returncode == 0, r.stderr
    remote_es = {e["filename"]: e for e in _remote_manifest(s3)}
    assert sorted(remote_es) == sorted(e["filename"] + ".age" for e in es)
    # the links name the remote objects (their .age and its checksum): the chain is followed there
    for child, parent in zip(es[1:], es, strict=False):
        link = remote_es[child["filename"] + ".age"]["parent"]
        assert link == {
            "filename": parent["filename"] + ".age",
            "sha256": remote_es[parent["filename"] + ".age"]["sha256"],
        }
    remote = remote_for(cfg)
    assert remote is not None
    rentries = remote.read_manifest()
    point = find_remote(rentries, es[-1]["filename"])
    assert point is not None
    with fetched_chain(remote, rentries, point, key) as paths:
        assert [p.name for p in paths] == [e["filename"] for e in es]
        assert all(
            p.read_bytes() == (backups / e["path"]).read_bytes() for p, e in zip(paths, es, strict=True)
        )


def test_a_rebuilt_remote_manifest_knows_the_chain_from_the_headers(tmp_path: Path, s3: S3Server) -> None:  # noqa: F811
    data, env = _env(tmp_path / "app", s3, **KEEP)
    backups = tmp_path / "backups"
    cfg, es = build_chain(data, backups, 3, env)
    assert run_cli("sync", env=env).returncode == 0
    (s3.data / "backups" / "off" / "plot" / "manifest.json").unlink()
    time.sleep(1.5)
    remote = remote_for(cfg)
    assert remote is not None
    rentries = remote.read_manifest()
    assert remote.manifest_state == "missing"
    got = {e["filename"]: e for e in rentries}
    for e in es:
        assert {k: got[e["filename"]].get(k) for k in ("kind", "parent", "full")} == {
            k: e[k] for k in ("kind", "parent", "full")
        }
    point = find_remote(rentries, es[-1]["filename"])
    assert point is not None
    with fetched_chain(remote, rentries, point, None) as paths:
        assert [p.name for p in paths] == [e["filename"] for e in es]


def test_an_incremental_is_never_restored_alone_from_the_remote(tmp_path: Path, s3: S3Server) -> None:  # noqa: F811
    data, env = _env(tmp_path / "app", s3, **KEEP)
    backups = tmp_path / "backups"
    cfg, es = build_chain(data, backups, 2, env)
    assert run_cli("sync", env=env).returncode == 0
    # a remote manifest that takes it for a full (edited, or rebuilt without reading it)
    mpath = s3.data / "backups" / "off" / "plot" / "manifest.json"
    doc = json.loads(mpath.read_text())
    for e in doc["backups"]:
        for k in ("kind", "parent", "full"):
            e.pop(k, None)
    mpath.write_text(json.dumps(doc))
    time.sleep(1.5)
    before = {n: tree(data / n) for n in ("storage", "auth")}
    r = run_cli("restore", "--from-remote", es[-1]["filename"], "--yes", env=env)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "its header says it is an incremental archive" in r.stderr
    assert {n: tree(data / n) for n in ("storage", "auth")} == before
    remote = remote_for(cfg)
    assert remote is not None
    rentries = remote.read_manifest()
    point = find_remote(rentries, es[-1]["filename"])
    assert point is not None
    with (
        pytest.raises(VerifyError, match="header says it is an incremental, the manifest says full"),
        fetched_chain(remote, rentries, point, None),
    ):
        raise AssertionError("fetched")
    # the full still restores from the remote, alone
    r = run_cli("restore", "--from-remote", es[0]["filename"], "--yes", env=env)
    assert r.returncode == 0, r.stderr


def test_restore_from_remote_of_an_incremental_restores_its_chain(tmp_path: Path, s3: S3Server) -> None:  # noqa: F811
    data, env = _env(tmp_path / "app", s3, **KEEP)
    backups = tmp_path / "backups"
    _, es = build_chain(data, backups, 3, env)
    want = {n: tree(data / n) for n in ("storage", "auth")}
    assert run_cli("sync", env=env).returncode == 0
    shutil.rmtree(backups)  # the backup volume is lost: only the remote has the chain
    shutil.rmtree(data / "storage")
    (data / "auth" / "extra").write_text("not in any backup\n")
    r = run_cli("restore", "--from-remote", es[-1]["filename"], "--dry-run", env=env)
    assert r.returncode == 0, r.stderr
    assert all(e["filename"] in r.stdout for e in es), r.stdout  # the dry run shows the chain
    assert not (data / "storage").exists()
    r = run_cli("restore", "--from-remote", es[-1]["filename"], "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert {n: tree(data / n) for n in ("storage", "auth")} == want
    (data / "auth" / "extra").write_text("again\n")
    r = run_cli("restore", "--from-remote", "--latest", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert {n: tree(data / n) for n in ("storage", "auth")} == want


# -- an object gone from the bucket while the remote manifest still lists it (a lifecycle rule, a hand)


def _drop_object(srv: S3Server, filename: str) -> None:
    (srv.data / "backups" / "off" / "plot" / "daily" / filename).unlink()
    time.sleep(1.5)  # the server's directory cache


@pytest.mark.parametrize(("encrypted", "drop"), [(False, 2), (True, 2), (True, 0)])
def test_sync_uploads_again_an_archive_gone_from_the_bucket(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
    encrypted: bool,
    drop: int,
) -> None:
    extra = dict(KEEP)
    key = None
    if encrypted:
        pub, key = _keypair(tmp_path)
        extra["GOFR_{P}_BACKUP_ENCRYPT_RECIPIENTS"] = pub
    data, env = _env(tmp_path / "app", s3, **extra)
    backups = tmp_path / "backups"
    cfg, es = build_chain(data, backups, 4, env)
    assert run_cli("sync", env=env).returncode == 0
    suffix = ".age" if encrypted else ""
    name = es[drop]["filename"] + suffix
    _drop_object(s3, name)
    r = run_cli("sync", env=env)
    assert r.returncode == 0, r.stderr
    assert f"re-uploaded {name}: it was listed in the remote manifest but missing from the bucket" in r.stdout
    assert f"daily/{name}" in s3.objects()
    r = run_cli("sync", "--json", env=env)  # and then it is up to date
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert (rep["uploaded"], rep["reuploaded"], rep["lost"], rep["broken"]) == ([], [], [], [])
    # the chain is whole again on the remote (an encrypted one was sealed anew: its children's
    # links follow it)
    remote = remote_for(cfg)
    assert remote is not None
    rentries = remote.read_manifest()
    assert sorted(e["filename"] for e in rentries) == sorted(e["filename"] + suffix for e in es)
    point = find_remote(rentries, es[-1]["filename"])
    assert point is not None
    with fetched_chain(remote, rentries, point, key) as paths:
        assert [p.name for p in paths] == [e["filename"] for e in es]
    r = run_cli("list", "--remote", env=env)
    assert r.returncode == 0 and "NOT RESTORABLE" not in r.stdout, r.stdout


def test_sync_says_loudly_what_the_remote_cannot_restore_when_a_gone_archive_is_not_here(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
) -> None:
    data, env = _env(tmp_path / "app", s3, **KEEP)
    backups = tmp_path / "backups"
    _, es = build_chain(data, backups, 4, env)
    assert run_cli("sync", env=env).returncode == 0
    (backups / es[2]["path"]).unlink()  # gone here too
    _drop_object(s3, es[2]["filename"])
    for _ in range(2):  # every sync that leaves the remote so says so, not only the first
        r = run_cli("sync", env=env)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "up to date" not in r.stdout + r.stderr
        last = r.stderr.splitlines()[-1]
        assert "the off-site copy is NOT whole" in last and es[3]["filename"] in last, r.stderr
    assert es[2]["filename"] not in [e["filename"] for e in _remote_manifest(s3)]  # dropped there
    r = run_cli("sync", "--json", env=env)
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert rep["lost"] == [] and [b["filename"] for b in rep["broken"]] == [es[3]["filename"]]
    assert es[2]["filename"] in rep["broken"][0]["reason"]


def test_sync_reports_the_lost_archive_in_the_run_that_finds_it(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
) -> None:
    data, env = _env(tmp_path / "app", s3, **KEEP)
    backups = tmp_path / "backups"
    _, es = build_chain(data, backups, 4, env)
    assert run_cli("sync", env=env).returncode == 0
    (backups / es[2]["path"]).unlink()
    _drop_object(s3, es[2]["filename"])
    r = run_cli("sync", "--json", env=env)
    assert r.returncode == 1, r.stderr
    rep = json.loads(r.stdout)
    assert rep["lost"] == [es[2]["filename"]] and rep["reuploaded"] == []
    assert [b["filename"] for b in rep["broken"]] == [es[3]["filename"]]


def test_restore_latest_from_remote_passes_over_points_whose_chain_is_not_whole_there(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
) -> None:
    data, env = _env(tmp_path / "app", s3, **KEEP)
    backups = tmp_path / "backups"
    _, es = build_chain(data, backups, 2, env)
    want = {n: tree(data / n) for n in ("storage", "auth")}  # what es[1] holds
    add_day(data, backups, env, es, 2)
    add_day(data, backups, env, es, 3)
    assert run_cli("sync", env=env).returncode == 0
    _drop_object(s3, es[2]["filename"])
    r = run_cli("restore", "--from-remote", "--latest", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert (
        f"passing over the newer {es[3]['filename']}: {es[2]['filename']} of its chain is missing there"
        in r.stderr
    ), r.stderr
    assert f"passing over the newer {es[2]['filename']}: its object is missing there" in r.stderr, r.stderr
    assert {n: tree(data / n) for n in ("storage", "auth")} == want


def test_list_remote_marks_points_whose_chain_is_not_whole_there(
    tmp_path: Path,
    s3: S3Server,  # noqa: F811
) -> None:
    data, env = _env(tmp_path / "app", s3, **KEEP)
    backups = tmp_path / "backups"
    _, es = build_chain(data, backups, 4, env)
    assert run_cli("sync", env=env).returncode == 0
    _drop_object(s3, es[2]["filename"])
    r = run_cli("list", "--remote", env=env)
    assert r.returncode == 0, r.stderr
    lines = {e["filename"]: next(ln for ln in r.stdout.splitlines() if e["filename"] in ln) for e in es}
    assert [("NOT RESTORABLE" in lines[e["filename"]]) for e in es] == [False, False, True, True], r.stdout
    assert f"{es[2]['filename']} of its chain is missing there" in lines[es[3]["filename"]]
    r = run_cli("list", "--remote", "--json", env=env)
    got = {e["filename"]: e["chain_broken"] for e in json.loads(r.stdout)["backups"]}
    assert got[es[0]["filename"]] is None and got[es[1]["filename"]] is None
    assert "missing there" in got[es[2]["filename"]] and "missing there" in got[es[3]["filename"]]
