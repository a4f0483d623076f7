"""Faults injected for real: SIGKILL at random points, a full disk, corruption, unwritable dirs.

Seeded (GOFR_FAULT_SEED, default 1) so that a failing trial can be replayed. Each test publishes
its figures to docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from gofrtest import (
    SimClock,
    cli_env,
    make_app,
    manifest,
    needs,
    popen_cli,
    publish,
    run_cli,
    snapshot,
    write,
)
from test_consistency import ro_mount

from gofr_common.backup import BackupConfig, BackupService
from gofr_common.backup.verify import verify_archive

pytestmark = pytest.mark.fault
SEED = int(os.environ.get("GOFR_FAULT_SEED", "1"))
TRIALS = int(os.environ.get("GOFR_FAULT_TRIALS", "50"))
PATHS = "storage:storage,auth:auth,cfg:config.json,logs:../logs"


def _setup(tmp: Path, **extra: str) -> tuple[Path, Path, dict[str, str]]:
    data, _ = make_app(tmp / "app")
    write(data / "storage" / "big" / "random.bin", random.Random(SEED).randbytes(3 << 20))
    backups = tmp / "backups"
    env = cli_env(
        data, backups, **{"GOFR_{P}_BACKUP_PATHS": PATHS, "GOFR_{P}_BACKUP_MAX_COUNT": "5", **extra}
    )
    return data, backups, env


def _timed(*args: str, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    r = run_cli(*args, env=env)
    assert r.returncode == 0, r.stderr
    return time.monotonic() - t0


def _kill_at(args: list[str], env: dict[str, str], delay: float, watch: Path) -> bool:
    """Start `gofr-backup ARGS`, SIGKILL it after `delay`; True if it had work in flight then."""
    p = popen_cli(*args, env=env)
    time.sleep(delay)
    try:
        in_flight = bool(list(watch.rglob("*.partial"))) or bool(list(watch.parent.rglob(".gofr-restore-*")))
    except OSError:  # the process is creating and removing these very files right now
        in_flight = True
    p.send_signal(signal.SIGKILL)
    p.communicate()
    return in_flight


def _manifest_sound(backups: Path) -> list[str]:
    """Every archive in the manifest exists and verifies; nothing listed is a partial file."""
    problems = []
    if not (backups / "manifest.json").exists():
        return problems
    for e in manifest(backups):
        a = backups / e["path"]
        if e["filename"].endswith(".partial"):
            problems.append(f"partial listed: {e['filename']}")
        elif not a.is_file():
            problems.append(f"manifest entry without archive: {e['path']}")
        else:
            r = verify_archive(a, e.get("sha256"))
            if not r.ok:
                problems.append(f"{e['path']}: {r.error}")
    return problems


def test_sigkill_during_now(tmp_path: Path) -> None:
    data, backups, env = _setup(tmp_path)
    d = _timed("now", env=env)
    rng = random.Random(SEED)
    failures, in_flight = [], 0
    for i in range(TRIALS):
        in_flight += _kill_at(["now"], env, rng.uniform(0.0, d), backups)
        problems = _manifest_sound(backups)
        r = run_cli("now", "--json", env=env)  # the next run succeeds ...
        if r.returncode != 0:
            problems.append(f"next run failed: {r.stderr.strip()}")
        if list(backups.rglob("*.partial")):  # ... and cleans up what the dead one left
            problems.append("a .partial survived the next run")
        problems += _manifest_sound(backups)
        if problems:
            failures.append((i, problems))
    publish(
        "SIGKILL during `now`",
        TRIALS,
        len(failures),
        "every archive in the manifest verifies; no partial is listed; the next run succeeds and removes "
        "what the dead process left",
        "tests/test_faults.py::test_sigkill_during_now",
        f"{in_flight} kills landed while an archive was being written",
    )
    assert not failures, failures[:3]
    assert in_flight >= TRIALS // 5, f"only {in_flight} kills landed mid-write: the trials did not test much"


def test_sigkill_during_prune(tmp_path: Path) -> None:
    data, backups, env = _setup(tmp_path, **{"GOFR_{P}_BACKUP_RETENTION_DAYS": "7"})
    cfg = BackupConfig.from_env(env=env)
    rng = random.Random(SEED + 1)
    failures, durations = [], []
    for i in range(TRIALS):
        # expired archives for prune to delete: written 10..30 days ago, under a long retention
        old = BackupService(
            BackupConfig.from_env(
                env={**env, "GOFR_PLOT_BACKUP_RETENTION_DAYS": "90", "GOFR_PLOT_BACKUP_PATHS": "auth:auth"}
            ),
            clock=SimClock(datetime.now().astimezone() - timedelta(days=30)),
        )  # type: ignore[arg-type]
        for _ in range(4):
            old.create_backup()
            old.clock.advance(days=5)  # type: ignore[attr-defined]
        if not durations:
            durations.append(_timed("prune", env=env))
            continue
        _kill_at(["prune"], env, rng.uniform(0.0, durations[0] * 1.2), backups)
        problems = _manifest_sound(backups)
        r = run_cli("prune", "--json", env=env)
        if r.returncode != 0:
            problems.append(f"next prune failed: {r.stderr.strip()}")
        problems += _manifest_sound(backups)
        tracked = {e["path"] for e in manifest(backups)}
        for a in backups.glob("daily/*.tar.gz"):
            if str(a.relative_to(backups)) not in tracked:
                problems.append(f"untracked archive left after the next prune: {a.name}")
        for s in backups.glob("daily/*.sha256"):
            if not s.with_name(s.name[:-7]).exists():
                problems.append(f"orphan checksum file: {s.name}")
        if problems:
            failures.append((i, problems))
    assert cfg.retention_days == 7
    publish(
        "SIGKILL during `prune`",
        TRIALS - 1,
        len(failures),
        "every archive in the manifest verifies; the next prune succeeds and leaves no orphans or "
        "untracked archives",
        "tests/test_faults.py::test_sigkill_during_prune",
    )
    assert not failures, failures[:3]


def test_sigkill_during_restore(tmp_path: Path) -> None:
    data, backups, env = _setup(tmp_path)
    logs = data.parent / "logs"
    targets = {"storage": data / "storage", "auth": data / "auth", "cfg": data / "config.json", "logs": logs}
    old = {n: snapshot(p) for n, p in targets.items()}  # what the archive holds ("old" live state)
    r = run_cli("now", "--json", env=env)
    archive = json.loads(r.stdout)["filename"]
    # the live data moves on: this is what a killed restore must leave whole, or replace whole
    shutil.rmtree(data / "storage" / "nested")
    write(data / "storage" / "new.txt", "new")
    write(data / "config.json", "changed")
    write(logs / "app.log", "rotated\n")
    saved = tmp_path / "saved"
    for n, p in targets.items():
        if p.is_dir():
            shutil.copytree(p, saved / n, symlinks=True)
        else:
            saved.mkdir(exist_ok=True)
            shutil.copy2(p, saved / n)
    new = {n: snapshot(p) for n, p in targets.items()}
    d = _timed("restore", archive, "--yes", env=env)
    rng = random.Random(SEED + 2)
    failures, mixed_states = [], 0
    for i in range(TRIALS):
        for n, p in targets.items():  # back to the live state
            if p.is_dir():
                shutil.rmtree(p)
                shutil.copytree(saved / n, p, symlinks=True)
            else:
                shutil.copy2(saved / n, p)
        assert {n: snapshot(p) for n, p in targets.items()} == new
        _kill_at(["restore", archive, "--yes"], env, rng.uniform(0.0, d), data)
        problems = []
        states = []
        for n, p in targets.items():
            s = snapshot(p)
            if old[n] == new[n]:  # unchanged since the backup: says nothing about the kill point
                if s != old[n]:
                    problems.append(f"{n} changed although the backup and the live data agree")
            elif s == old[n]:
                states.append("restored")
            elif s == new[n]:
                states.append("untouched")
            else:
                problems.append(f"{n} is neither wholly old nor wholly new")
        mixed_states += len(set(states)) > 1
        r = run_cli("restore", archive, "--yes", env=env)
        if r.returncode != 0:
            problems.append(f"next restore failed: {r.stderr.strip()}")
        if {n: snapshot(p) for n, p in targets.items()} != old:
            problems.append("the next restore did not restore everything")
        if list(data.parent.rglob(".gofr-restore-*")):
            problems.append("staging left behind")
        if problems:
            failures.append((i, problems))
    publish(
        "SIGKILL during `restore`",
        TRIALS,
        len(failures),
        "each restored path is either wholly old or wholly new; the next restore succeeds and removes the "
        "staging",
        "tests/test_faults.py::test_sigkill_during_restore",
        f"{mixed_states} kills landed between two paths' swaps",
    )
    assert not failures, failures[:3]


# -- a real full disk -------------------------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    needs(os.geteuid() == 0, "mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    needs(r.returncode == 0, f"cannot mount tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_a_backup(tmp_path: Path, small_fs: Path) -> None:
    data = tmp_path / "data"
    write(data / "s" / "text.log", "the same line again and again\n" * 100_000)  # 3 MB, compresses to ~KB
    env = cli_env(data, small_fs, **{"GOFR_{P}_BACKUP_PATHS": "s:s"})
    for _ in range(2):
        assert run_cli("now", env=env).returncode == 0
    good = manifest(small_fs)
    # now 20 MB that does not compress: the estimate from the last ratio passes, the disk fills up
    write(data / "s" / "random.bin", os.urandom(20 << 20))
    r = run_cli("now", env=env)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]  # (the lines before it are the run's log)
    assert last.startswith("gofr-backup: cannot write archive") and "No space left on device" in last, (
        r.stderr
    )
    assert list(small_fs.rglob("*.partial")) == []
    assert manifest(small_fs) == good
    assert all(verify_archive(small_fs / e["path"], e["sha256"]).ok for e in good)
    st = run_cli("status", "--json", env=env)
    assert st.returncode == 1 and "No space left" in json.loads(st.stdout)["last_failure"]["error"]
    # housekeeping never deletes good archives to make room
    assert run_cli("prune", env=env).returncode == 0
    assert manifest(small_fs) == good
    publish(
        "Disk full during a backup (8 MB tmpfs)",
        1,
        0,
        "one-line error; partial removed; older archives intact and verified; status unhealthy; nothing "
        "deleted to make room",
        "tests/test_faults.py::test_disk_full_during_a_backup",
    )


def test_preflight_refuses_a_backup_that_cannot_fit(tmp_path: Path, small_fs: Path) -> None:
    data = tmp_path / "data"
    write(data / "s" / "random.bin", os.urandom(12 << 20))
    env = cli_env(data, small_fs, **{"GOFR_{P}_BACKUP_PATHS": "s:s"})
    r = run_cli("now", env=env)
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()[-1]
    assert (
        "not enough space" in err and "needs about 16.1 MB" in err
    )  # 12 MiB x 1.0 x 1.2 + 1 MiB and "free" in err, err
    assert "ratio 1.0" in err
    assert list(small_fs.rglob("*.tar*")) == []
    publish(
        "Backup that cannot fit",
        1,
        0,
        "refused before writing, with the estimate in the error",
        "tests/test_faults.py::test_preflight_refuses_a_backup_that_cannot_fit",
    )


# -- corruption in every position --------------------------------------------------------------------
def _corrupt(p: Path, where: str) -> None:
    b = bytearray(p.read_bytes())
    pos = {"head": 20, "middle": len(b) // 2, "tail": len(b) - 12}[where]
    for k in range(8):
        b[min(pos + k, len(b) - 1)] ^= 0xA5
    p.write_bytes(bytes(b))


POSITIONS = ["manifest", "state", "sidecar", "archive-head", "archive-middle", "archive-tail"]


@pytest.mark.parametrize("where", POSITIONS)
def test_corruption_is_detected_and_never_deletes_a_good_archive(tmp_path: Path, where: str) -> None:
    data, backups, env = _setup(tmp_path)
    cfg = BackupConfig.from_env(env=env)
    svc = BackupService(cfg, clock=SimClock(datetime.now().astimezone() - timedelta(hours=3)))  # type: ignore[arg-type]
    for _ in range(3):
        svc.create_backup()
        svc.clock.advance(hours=1)  # type: ignore[attr-defined]
    entries = sorted(manifest(backups), key=lambda e: e["created"])
    victim = entries[1]
    a = backups / victim["path"]
    if where == "manifest":
        _corrupt(backups / "manifest.json", "middle")
    elif where == "state":
        (backups / ".gofr-plot.state.json").write_text('{"last_result": "ok", "last_suc')
    elif where == "sidecar":
        _corrupt(a.with_name(a.name + ".sha256"), "head")
    else:
        _corrupt(a, where.split("-")[1])
    v = run_cli("verify", "--all", "--json", env=env)
    st = run_cli("status", "--json", env=env)
    p = run_cli("prune", "--json", env=env)
    assert p.returncode == 0, p.stderr
    left = {x.name for x in backups.glob("daily/*.tar.gz")}
    if where == "manifest":
        assert "unreadable" in v.stderr and v.returncode == 0
        assert left == {e["filename"] for e in entries}
    elif where == "state":
        assert st.returncode == 1 and "state file unreadable" in json.loads(st.stdout)["reasons"][0]
        assert left == {e["filename"] for e in entries}
        assert run_cli("now", env=env).returncode == 0 and run_cli("status", env=env).returncode == 0
    elif where == "sidecar":
        res = {r["filename"]: r for r in json.loads(v.stdout)["results"]}
        assert v.returncode == 1 and "checksum file" in res[victim["filename"]]["error"]
        assert left == {e["filename"] for e in entries}, (
            "a damaged .sha256 must not get a good archive deleted"
        )
    else:
        res = {r["filename"]: r for r in json.loads(v.stdout)["results"]}
        assert v.returncode == 1 and not res[victim["filename"]]["ok"]
        assert left == {e["filename"] for e in entries} - {victim["filename"]}  # only the bad one goes
        assert victim["filename"] in p.stdout
    for e in entries:
        if e["filename"] != victim["filename"] or where in ("manifest", "state"):
            assert verify_archive(backups / e["path"], e["sha256"]).ok
    publish(
        f"Corruption: {where}",
        1,
        0,
        "detected and reported; no good archive deleted",
        f"tests/test_faults.py::test_corruption_is_detected_and_never_deletes_a_good_archive[{where}]",
    )


# -- directories that are not what they should be ------------------------------------------------------
def test_read_only_backup_dir(tmp_path: Path) -> None:
    data, backups, env = _setup(tmp_path)
    backups.mkdir()
    with ro_mount(backups, tmp_path / "ro-backups") as ro:
        r = run_cli("now", env={**env, "GOFR_PLOT_BACKUP_DIR": str(ro)})
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "not writable (Read-only file system)" in r.stderr and "mount it read-write" in r.stderr


def test_missing_data_dir(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "nope", tmp_path / "b")
    r = run_cli("now", env=env)
    assert r.returncode == 1 and "the data directory" in r.stderr and "does not exist" in r.stderr
    assert "DATA_DIR" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_permission_denied_on_backup_dir(tmp_path: Path) -> None:
    needs(os.geteuid() == 0 and bool(shutil.which("setpriv")), "needs root and setpriv")
    data, backups, env = _setup(tmp_path)
    backups.mkdir(mode=0o700)
    os.chown(backups, 1000, 1000)
    r = subprocess.run(
        [
            "setpriv",
            "--bounding-set=-dac_override,-dac_read_search",
            sys.executable,
            "-m",
            "gofr_common.backup",
            "now",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"{backups} is not writable (Permission denied) by uid:gid 0:0" in r.stderr
    assert list(backups.iterdir()) == []
    publish(
        "Unwritable or missing directories",
        3,
        0,
        "read-only backup dir, missing data dir and permission denied each give one clear line, exit 1",
        "tests/test_faults.py::test_permission_denied_on_backup_dir (+ read_only, missing_data_dir)",
    )
