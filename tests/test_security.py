"""Hostile input, fuzzing, permissions and isolation."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from gofrtest import (
    Evidence,
    cli_env,
    craft_archive,
    make_app,
    manifest,
    needs,
    reliability,
    run_cli,
    tinfo,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gofr_common.backup.config import VARIABLES, BackupConfig
from gofr_common.backup.errors import ConfigError
from gofr_common.backup.manifest import Manifest
from gofr_common.backup.verify import verify_archive

FUZZ = settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None
)


def _restore(app: dict[str, Any], archive: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("restore", archive.name, "--target", str(app["tmp"] / "target"), "--yes", env=app["env"])


def test_name_collision_after_normalisation_is_refused(app: dict[str, Any]) -> None:
    a = craft_archive(
        app["backups"] / "daily" / "gofr-plot_daily_20260101_020000.tar.gz",
        [
            tinfo("storage", tarfile.DIRTYPE),
            tinfo("storage/a.txt", data=b"first"),
            tinfo("storage/./a.txt", data=b"second, overwriting the first"),
        ],
    )
    r = _restore(app, a)
    assert r.returncode == 1 and "not in normal form" in r.stderr
    assert not (app["tmp"] / "target" / "storage").exists()


def test_member_claiming_a_huge_size_is_refused_without_filling_the_disk(app: dict[str, Any]) -> None:
    import gzip
    import hashlib

    buf = io.BytesIO()
    t = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT)
    meta = json.dumps({"format": 1, "project": "plot", "paths": {"storage": "storage"}}).encode()
    mi = tarfile.TarInfo(".gofr-backup.json")
    mi.size = len(meta)
    t.addfile(mi, io.BytesIO(meta))
    t.addfile(tinfo("storage", tarfile.DIRTYPE)[0])
    huge = tarfile.TarInfo("storage/huge.bin")
    huge.size = 1 << 40  # claims 1 TiB; no data follows
    raw = buf.getvalue() + huge.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + bytes(1024)
    a = app["backups"] / "daily" / "gofr-plot_daily_20260101_020000.tar.gz"
    a.parent.mkdir(parents=True)
    a.write_bytes(gzip.compress(raw))
    a.with_name(a.name + ".sha256").write_text(f"{hashlib.sha256(a.read_bytes()).hexdigest()}  {a.name}\n")
    r = _restore(app, a)
    assert r.returncode == 1 and "refusing" in r.stderr, r.stderr
    assert not (app["tmp"] / "target" / "storage").exists()
    staged = list(app["tmp"].rglob("huge.bin"))
    assert staged == [], "nothing of the claimed 1 TiB was written"


def _overlong(case: str) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """One member no file system can create, or whose attributes no system call takes."""
    base = [tinfo("storage", tarfile.DIRTYPE), tinfo("storage/ok.txt", data=b"fine")]
    if case == "symlink target over 4095 bytes":
        return [*base, tinfo("storage/evil", tarfile.SYMTYPE, linkname="x" * 5000)]
    if case == "hard link target over 4095 bytes":
        return [*base, tinfo("storage/h", tarfile.LNKTYPE, linkname="storage/" + "y" * 4100)]
    if case == "name component over 255 bytes":
        return [*base, tinfo("storage/" + "n" * 300, tarfile.DIRTYPE)]
    if case == "name component over 255 bytes, 200 characters":
        return [*base, tinfo("storage/" + "é" * 200, data=b"two bytes a character")]
    if case == "whole name over 4095 bytes":
        return [*base, tinfo("storage/" + "/".join(["d" * 200] * 21) + "/f", data=b"deep")]
    ti, data = tinfo("storage/a", data=b"attrs")
    if case == "uid 2**32":
        ti.uid = 2**32
    elif case == "gid -1":
        ti.pax_headers = {"gid": "-1"}
    elif case == "mtime 1e20":
        ti.pax_headers = {"mtime": "1e20"}
    return [*base, (ti, data)]


@pytest.mark.parametrize(
    "case",
    [
        "symlink target over 4095 bytes",
        "hard link target over 4095 bytes",
        "name component over 255 bytes",
        "name component over 255 bytes, 200 characters",
        "whole name over 4095 bytes",
        "uid 2**32",
        "gid -1",
        "mtime 1e20",
    ],
)
def test_names_and_attributes_no_file_system_takes_are_refused(app: dict[str, Any], case: str) -> None:
    """A re-signed archive with a name no file system can create (ENAMETOOLONG) or an out-of-range
    pax attribute (OverflowError) passed `verify` as a sound archive: the drill said COULD NOT RUN, so
    `restore --latest` kept choosing it and every restore failed (with "unexpected error" for the
    attributes), and the dry run planned to create it. Now it is refused as the archive's fault:
    `verify` (FAILED), the dry run, the restore (before anything is staged) and the drill (FAILED,
    checked)."""
    a = craft_archive(app["backups"] / "daily" / "gofr-plot_daily_20260101_020000.tar.gz", _overlong(case))
    v = run_cli("verify", a.name, "--json", env=app["env"])
    res = json.loads(v.stdout)["results"][0]
    assert v.returncode == 1 and res["ok"] is False and res["checked"] is True, res
    assert "refusing member" in res["error"], res
    target = app["tmp"] / "target"
    for dry in (["--dry-run"], ["--yes"]):
        r = run_cli("restore", a.name, "--target", str(target), *dry, env=app["env"])
        assert r.returncode == 1 and "refusing member" in r.stderr, (dry, r.stderr)
        assert "Traceback" not in r.stderr and "unexpected error" not in r.stderr, r.stderr
        assert len([x for x in r.stderr.splitlines() if "gofr-backup:" in x]) == 1, r.stderr
        assert not target.exists() or list(target.iterdir()) == []
    assert not any(p.name.startswith(".gofr-restore-") for p in app["tmp"].rglob("*"))
    d = run_cli("drill", a.name, "--json", env=app["env"])
    res = json.loads(d.stdout)
    assert d.returncode == 1 and res["ok"] is False and res["checked"] is True, res
    assert "refusing member" in res["error"], res


@reliability(
    "Archive with 200,000 members",
    "verify's peak RSS stays under 120 MB (tarfile's member list is not kept); restore completes",
)
def test_hundreds_of_thousands_of_members_use_bounded_memory(tmp_path: Path, evidence: Evidence) -> None:
    n = 200_000
    note = ""
    with evidence.trial():
        data = tmp_path / "data"
        d = data / "many"
        d.mkdir(parents=True)
        for i in range(n):
            (d / f"f{i:06d}").touch()
        env = cli_env(data, tmp_path / "b", **{"GOFR_{P}_BACKUP_PATHS": "many:many"})
        r = run_cli("now", "--json", env=env, timeout=600)
        assert r.returncode == 0, r.stderr
        entry = json.loads(r.stdout)
        assert entry["file_count"] == n + 1
        t0 = time.monotonic()
        p = subprocess.run(
            [
                sys.executable,
                "-c",
                f"""
import sys
from pathlib import Path
from gofr_common.backup.verify import verify_archive
r = verify_archive(Path({str(tmp_path / "b" / entry["path"])!r}))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the forking parent (pytest)
hwm = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")).split()[1]
print(r.ok, r.file_count, hwm)
""",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        ok, count, rss_kb = p.stdout.split()
        note = f"verify peaked at {int(rss_kb) // 1024} MB RSS"
        assert (ok, int(count)) == ("True", n + 1), p.stderr
        assert int(rss_kb) < 120_000, f"verify of {n} members peaked at {int(rss_kb) // 1024} MB"
        r = run_cli(
            "restore", entry["filename"], "--target", str(tmp_path / "t"), "--yes", env=env, timeout=900
        )
        assert r.returncode == 0, r.stderr
        assert len(os.listdir(tmp_path / "t" / "many")) == n
        note += f"; verify and restore took {time.monotonic() - t0:.0f}s"
    evidence.publish(note)


def test_symlink_to_etc_shadow_is_archived_as_a_link_never_followed(app: dict[str, Any]) -> None:
    os.symlink("/etc/shadow", app["data"] / "storage" / "shadow-link")
    r = run_cli("now", "--json", env={**app["env"], "GOFR_PLOT_BACKUP_COMPRESSION": "none"})
    assert r.returncode == 0, r.stderr
    entry = json.loads(r.stdout)
    raw = (app["backups"] / entry["path"]).read_bytes()
    with tarfile.open(app["backups"] / entry["path"]) as t:
        m = t.getmember("storage/shadow-link")
        assert m.issym() and m.linkname == "/etc/shadow" and m.size == 0
    if os.access("/etc/shadow", os.R_OK):
        first = Path("/etc/shadow").read_bytes().split(b"\n")[0]
        assert first not in raw, "the content of /etc/shadow ended up in the archive"
    assert any("shadow-link" in w and "outside its path" in w for w in entry["warnings"])


# -- fuzzing (bounded here; `make fuzz` runs many more examples) ------------------------------------
@pytest.fixture(scope="module")
def valid_archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    tmp = tmp_path_factory.mktemp("fuzz")
    data, _ = make_app(tmp / "app")
    env = cli_env(
        data,
        tmp / "b",
        **{"GOFR_{P}_BACKUP_PATHS": "auth:auth,cfg:config.json", "GOFR_{P}_BACKUP_COMPRESSION": "zstd"},
    )
    r = run_cli("now", "--json", env=env)
    return (tmp / "b" / json.loads(r.stdout)["path"]).read_bytes()


def _tar_contents(raw: bytes) -> list[tuple[str, int, int, int, str]] | None:
    """What a zstd-compressed tar holds (name, type, mode, mtime, sha256 of the data), read with
    the zstandard and tarfile modules directly, not through our reader; None if unreadable."""
    import hashlib

    import zstandard

    try:
        plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True).read()
        out = []
        with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as t:
            for m in t:
                f = t.extractfile(m) if m.isfile() else None
                digest = hashlib.sha256(f.read()).hexdigest() if f is not None else ""
                out.append((m.name, int.from_bytes(m.type, "big"), m.mode, int(m.mtime), digest))
        return out
    except (zstandard.ZstdError, tarfile.TarError, EOFError, OSError):
        return None


@FUZZ
@given(st.data())
def test_fuzz_archive_reader(tmp_path: Path, valid_archive: bytes, data: st.DataObject) -> None:
    b = bytearray(valid_archive)
    for _ in range(data.draw(st.integers(0, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        i = data.draw(st.integers(0, max(0, len(b) - 1)))
        if op == "flip" and b:
            b[i] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del b[i : i + data.draw(st.integers(1, 64))]
        elif op == "insert":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=64))
        elif op == "zero":
            b[i : i + 512] = bytes(len(b[i : i + 512]))
    name = data.draw(
        st.sampled_from(
            [
                "gofr-plot_daily_20260101_020000.tar.zst",
                "gofr-plot_daily_20260101_020000.tar.gz",
                "gofr-plot_daily_20260101_020000.tar",
            ]
        )
    )
    p = tmp_path / name
    p.write_bytes(bytes(b))
    import hashlib

    # the .sha256 matches the damaged bytes (damage done before the checksum was taken): only the
    # archive's own structure and the codec's checksum can tell
    p.with_name(name + ".sha256").write_text(f"{hashlib.sha256(bytes(b)).hexdigest()}  {name}\n")
    r = verify_archive(p)  # must return, never raise
    assert r.ok or r.error
    if bytes(b) == valid_archive and name.endswith(".zst"):
        assert r.ok, r.error  # an intact archive passes: the checks below are not vacuous
    if r.ok:
        # whatever verify accepts holds exactly what was archived, read by an independent reader
        assert name.endswith(".zst"), "zstd bytes accepted under another codec's name"
        got, want = _tar_contents(bytes(b)), _tar_contents(valid_archive)
        assert want and got == want, "verify accepted an archive whose content differs from what was archived"


@FUZZ
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=5),
        max_leaves=20,
    )
)
def test_fuzz_manifest_parser(tmp_path: Path, doc: Any) -> None:
    import tempfile

    d = Path(tempfile.mkdtemp(dir=tmp_path))  # one dir per example (hypothesis replays examples)
    (d / "manifest.json").write_text(json.dumps({"backups": doc} if isinstance(doc, list) else doc))
    entries = Manifest(d).load("plot")  # never raises: a bad manifest is kept aside and rebuilt
    assert isinstance(entries, list)


# values a config may hold: any text, numbers of every size, and the edge cases of each parser
CONFIG_VALUES = st.one_of(
    st.text(max_size=30),
    st.integers(-(10**12), 10**12).map(str),
    st.sampled_from(
        ["0", "1", " 7 ", "36500", "36501", "1000000000", "nan", "inf", "-inf", "1e9", "24h", "25h", "0.5"]
        + ["s3://bucket/prefix", "http://127.0.0.1:9", "0 0 30 2 *", "0 0 29 2 *", "*/5 * * * *"]
        + ["UTC", ":Europe/Berlin", "Mars/Olympus", "/etc/hostname", "json", "xml", "JSON"]
    ),
)
CONFIG_KEYS = [f"GOFR_PLOT_BACKUP_{k}" for k in VARIABLES] + [
    "GOFR_PROJECT",
    "TZ",
    "GOFR_BACKUP_PROGRESS_SECONDS",
    "GOFR_BACKUP_LOG_FORMAT",
]


@FUZZ
@given(st.dictionaries(st.sampled_from(CONFIG_KEYS), CONFIG_VALUES, max_size=8))
def test_fuzz_config_parser(env: dict[str, str]) -> None:
    """Either one clean line (ConfigError), or a configuration that every part of the program can
    use: its retention limits, schedule, zone, progress interval and log format all compute."""
    from datetime import datetime

    from gofr_common.backup import log, progress
    from gofr_common.backup.retention import Policy, age_cutoff
    from gofr_common.backup.schedule import interval, next_run, prev_run, zone_from_tz

    env = {k: v for k, v in env.items() if "\x00" not in v}
    env.setdefault("GOFR_PROJECT", "plot")
    try:
        c = BackupConfig.from_env(env=env)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e).strip()
        return
    assert c.project == env["GOFR_PROJECT"].strip()
    now = datetime.now(zone_from_tz(env.get("TZ")))
    policies = [Policy.of(c)]
    if c.remote is not None:
        r = c.remote
        policies.append(Policy(r.retention_days, r.max_count, r.weekly_weeks, r.monthly_months))
    for p in policies:
        for tier in ("daily", "weekly", "monthly"):
            assert age_cutoff(tier, now, p) < now
    assert prev_run(c.schedule, now) <= now < next_run(c.schedule, now)
    assert interval(c.schedule, now).total_seconds() > 0
    assert 0 < progress.interval(env.get("GOFR_BACKUP_PROGRESS_SECONDS"), tty=False) <= 3600
    assert log.log_format(env.get("GOFR_BACKUP_LOG_FORMAT")) in ("text", "json")
    assert 0 < c.lock_timeout <= 86400 and 0 < c.hook_timeout <= 86400


# -- permissions and isolation ------------------------------------------------------------------------
def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("umask,expected", [(None, 0o640), ("0077", 0o600)])
def test_files_are_created_0640_or_0600(app: dict[str, Any], umask: str | None, expected: int) -> None:
    env = {**app["env"], **({"GOFR_PLOT_BACKUP_UMASK": umask} if umask else {})}
    r = run_cli("now", "--json", env=env)
    a = app["backups"] / json.loads(r.stdout)["path"]
    for p in (
        a,
        a.with_name(a.name + ".sha256"),
        app["backups"] / "manifest.json",
        app["backups"] / ".gofr-plot.state.json",
    ):
        assert _mode(p) == expected, (p.name, oct(_mode(p)))
    assert _mode(a.parent) & 0o007 == 0


def test_a_permissive_umask_is_refused(app: dict[str, Any]) -> None:
    r = run_cli("now", env={**app["env"], "GOFR_PLOT_BACKUP_UMASK": "0022"})
    assert r.returncode == 2 and "GOFR_PLOT_BACKUP_UMASK" in r.stderr and not app["backups"].exists()


def test_service_refuses_to_run_as_root(app: dict[str, Any]) -> None:
    needs(os.geteuid() == 0, "refusing root can only be tested as root")
    env = {k: v for k, v in app["env"].items() if k != "GOFR_BACKUP_ALLOW_ROOT"}
    r = run_cli("run", env=env, timeout=30)
    assert r.returncode == 2 and "refuses to run as root" in r.stderr and "GOFR_BACKUP_ALLOW_ROOT" in r.stderr
    assert not app["backups"].exists()


def test_two_projects_in_one_backup_dir_never_touch_each_other(tmp_path: Path) -> None:
    data, _ = make_app(tmp_path / "app")
    shared = tmp_path / "backups"
    envs = {
        p: cli_env(
            data,
            shared,
            project=p,
            **{"GOFR_{P}_BACKUP_PATHS": "auth:auth", "GOFR_{P}_BACKUP_MAX_COUNT": "2"},
        )
        for p in ("plot", "doc")
    }
    for _ in range(3):
        for env in envs.values():
            assert run_cli("now", env=env).returncode == 0
    es = manifest(shared)
    assert sorted(e["project"] for e in es) == ["doc", "doc", "plot", "plot"]  # each pruned to its own 2
    # plot's operations see only plot's archives
    listed = json.loads(run_cli("list", "--json", env=envs["plot"]).stdout)
    assert {b["project"] for b in listed["backups"]} == {"plot"} and listed["summary"]["untracked"] == []
    v = json.loads(run_cli("verify", "--all", "--json", env=envs["plot"]).stdout)
    assert all(r["filename"].startswith("gofr-plot_") for r in v["results"])
    # damage one of doc's archives: plot's prune must not delete it
    doc_archive = next(shared / e["path"] for e in es if e["project"] == "doc")
    doc_archive.write_bytes(b"garbage")
    run_cli("verify", "--all", env=envs["doc"])
    assert run_cli("prune", env=envs["plot"]).returncode == 0
    assert doc_archive.exists()
    # separate locks: both can back up at the same time
    assert {p.name for p in shared.glob(".gofr-*.lock")} == {
        ".gofr-plot.lock",
        ".gofr-doc.lock",
        ".gofr-plot.state.json.lock",
        ".gofr-doc.state.json.lock",
    }
    assert {p.name for p in shared.glob(".gofr-*.state.json")} == {
        ".gofr-plot.state.json",
        ".gofr-doc.state.json",
    }


@reliability(
    "Readers during backups and prunes",
    "manifest.json is replaced atomically: every read (one trial each) parses and is complete",
)
def test_readers_always_see_a_consistent_manifest_while_backups_and_prunes_run(
    app: dict[str, Any], evidence: Evidence
) -> None:
    env = {**app["env"], "GOFR_PLOT_BACKUP_MAX_COUNT": "3", "GOFR_PLOT_BACKUP_PATHS": "auth:auth"}
    assert run_cli("now", env=env).returncode == 0
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                doc = json.loads((app["backups"] / "manifest.json").read_bytes())
                complete = all(
                    {"filename", "path", "tier", "created", "sha256"} <= set(e) for e in doc["backups"]
                )
                evidence.count(complete, "an entry lacks a field")
            except Exception as e:  # noqa: BLE001 - anything here is a torn read
                evidence.count(False, repr(e))

    t = threading.Thread(target=reader)
    t.start()
    writes = 0
    try:
        for i in range(12):
            writes += run_cli("prune" if i % 3 == 2 else "now", env=env).returncode == 0
            st = run_cli("status", "--json", env=env)
            json.loads(st.stdout)
            assert json.loads(run_cli("list", "--json", env=env).stdout)["summary"]["count"] >= 1
    finally:
        stop.set()
        t.join()
    evidence.require(writes == 12, f"only {writes} of 12 backups and prunes succeeded")
    evidence.require(evidence.trials > 100, f"only {evidence.trials} reads: too few to tell")
    evidence.publish()
