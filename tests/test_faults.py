"""Faults injected for real: SIGKILL at random points, a full disk, corruption, unwritable dirs.

Seeded (GOFR_FAULT_SEED, default 1) so that a failing trial can be replayed. Each test counts its
trials and failures as they happen, publishes them to docs/RELIABILITY.md, and only then fails if a
trial failed (gofrtest.Evidence).
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
    Evidence,
    SimClock,
    cli_env,
    make_app,
    manifest,
    needs,
    popen_cli,
    reliability,
    run_cli,
    snapshot,
    tmpfs,
    write,
)
from test_consistency import ro_mount

from gofr_common.backup import BackupConfig, BackupService
from gofr_common.backup.verify import verify_archive

pytestmark = pytest.mark.fault
SEED = int(os.environ.get("GOFR_FAULT_SEED", "1"))
TRIALS = int(os.environ.get("GOFR_FAULT_TRIALS", "50"))


def more_trials(i: int, landed: int) -> bool:
    """Whether a kill loop goes on after trial ``i``: it runs TRIALS trials, and then more (at most
    3 x TRIALS in all) until a fifth of TRIALS kills have landed inside the critical window; on a
    busy machine (the suite's other workers) the timing taken from one undisturbed run is less
    exact. The table reports every trial run and how many landed."""
    return i + 1 < TRIALS or landed < TRIALS // 5


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


def _ino(p: Path) -> int | None:
    try:
        return os.lstat(p).st_ino
    except FileNotFoundError:
        return None


def _first_change(proc: subprocess.Popen[str], watched: list[Path], timeout: float = 60) -> float | None:
    """Poll until one of ``watched`` is replaced (its inode changes), i.e. until the process made
    the first file operation of its critical window; the time then, or None if it exited first."""
    before = [_ino(w) for w in watched]
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if [_ino(w) for w in watched] != before:
            return time.monotonic()
    return None


def _spin(seconds: float) -> None:
    """Wait precisely (time.sleep oversleeps by tens of microseconds; the windows are ~1 ms)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _kill_in_window(args: list[str], env: dict[str, str], watched: list[Path], delay: float) -> None:
    """Start `gofr-backup ARGS`, wait until its critical window opens (one of ``watched`` is
    replaced), then SIGKILL it after ``delay``. Where the kill really landed is judged afterwards
    from what is on disk, not from this timing."""
    p = popen_cli(*args, env=env)
    _first_change(p, watched)
    _spin(delay)
    p.send_signal(signal.SIGKILL)
    p.communicate()


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


def _writing(backups: Path) -> bool:
    """Is an archive being written (a .partial file in daily/) right now?"""
    try:
        return any(n.endswith(".partial") for n in os.listdir(backups / "daily"))
    except OSError:
        return False


@reliability(
    "SIGKILL during `now`",
    "every archive in the manifest verifies; no partial is listed; the next run succeeds and removes "
    "what the dead process left",
)
def test_sigkill_during_now(tmp_path: Path, evidence: Evidence) -> None:
    """A third of the kills land at a random time of the whole run; the others wait until the
    archive's .partial file appears and land a random fraction of the measured write later."""
    data, backups, env = _setup(tmp_path)
    # one undisturbed run: how long it takes, and how long its .partial file exists
    t0 = time.monotonic()
    p = popen_cli("now", env=env)
    appeared = gone = None
    while p.poll() is None:
        writing = _writing(backups)
        if writing and appeared is None:
            appeared = time.monotonic()
        elif not writing and appeared is not None and gone is None:
            gone = time.monotonic()
    p.communicate()
    assert p.returncode == 0 and appeared is not None and gone is not None, (appeared, gone)
    d, write_time = time.monotonic() - t0, gone - appeared
    rng = random.Random(SEED)
    in_flight = 0
    for i in range(3 * TRIALS):
        with evidence.trial() as problems:
            if i % 3 == 0:
                in_flight += _kill_at(["now"], env, rng.uniform(0.0, d), backups)
            else:
                p = popen_cli("now", env=env)
                while p.poll() is None and not _writing(backups):
                    pass
                _spin(rng.uniform(0, write_time))
                in_flight += _writing(backups)
                p.send_signal(signal.SIGKILL)
                p.communicate()
            problems += _manifest_sound(backups)
            r = run_cli("now", "--json", env=env)  # the next run succeeds ...
            if r.returncode != 0:
                problems.append(f"next run failed: {r.stderr.strip()}")
            if list(backups.rglob("*.partial")):  # ... and cleans up what the dead one left
                problems.append("a .partial survived the next run")
            problems += _manifest_sound(backups)
        if not more_trials(i, in_flight):
            break
    evidence.require(
        in_flight >= TRIALS // 5, f"only {in_flight} kills landed mid-write: the trials did not test much"
    )
    evidence.publish(f"{in_flight} kills landed while an archive was being written")


def _age_out(env: dict[str, str], n: int = 6) -> None:
    """``n`` archives written 30, 25, 20 ... days ago: expired under RETENTION_DAYS=7."""
    old = BackupService(
        BackupConfig.from_env(
            env={
                **env,
                "GOFR_PLOT_BACKUP_RETENTION_DAYS": "90",
                "GOFR_PLOT_BACKUP_MAX_COUNT": "90",
                "GOFR_PLOT_BACKUP_PATHS": "auth:auth",
            }
        ),
        clock=SimClock(datetime.now().astimezone() - timedelta(days=30)),
    )  # type: ignore[arg-type]
    for _ in range(n):
        old.create_backup()
        old.clock.advance(days=3)  # type: ignore[attr-defined]


def _timed_prune(env: dict[str, str], backups: Path) -> tuple[float, float]:
    """Age out a set of archives and prune them undisturbed; how long the prune took, and how long
    from its manifest write (the first file operation) to its last deletion."""
    _age_out(env)
    files = _doomed_files(backups, {e["path"] for e in manifest(backups)})  # all but the newest go
    t0 = time.monotonic()
    p = popen_cli("prune", env=env)
    opened = _first_change(p, [backups / "manifest.json"])
    closed = None
    while p.poll() is None:
        if closed is None and sum(f.exists() for f in files) <= 2:  # the newest and its .sha256
            closed = time.monotonic()
    p.communicate()
    assert p.returncode == 0 and opened is not None and closed is not None, (opened, closed)
    return time.monotonic() - t0, closed - opened


def _doomed_files(backups: Path, doomed: set[str]) -> list[Path]:
    return [backups / p for p in sorted(doomed)] + [backups / (p + ".sha256") for p in sorted(doomed)]


@reliability(
    "SIGKILL during `prune`",
    "every archive in the manifest verifies; the next prune succeeds, deletes what had expired and "
    "leaves no orphans or untracked archives",
)
def test_sigkill_during_prune(tmp_path: Path, evidence: Evidence) -> None:
    """A third of the kills land at a random time of the whole run; the others wait until prune
    has rewritten the manifest (its first file operation) and land a random fraction of the
    measured window later, so that many hit the window between the manifest write and the last
    deletion. Where each kill landed is judged from the files it left."""
    data, backups, env = _setup(tmp_path, **{"GOFR_{P}_BACKUP_RETENTION_DAYS": "7"})
    rng = random.Random(SEED + 1)
    # three undisturbed prunes: how long one takes, and how long its critical window is (medians)
    timings = [_timed_prune(env, backups) for _ in range(3)]
    duration, window = (sorted(t)[1] for t in zip(*timings, strict=True))
    inside = partial = 0
    for i in range(3 * TRIALS):
        with evidence.trial() as problems:
            _age_out(env)
            listed = {e["path"] for e in manifest(backups)}
            if i % 3 == 0:
                _kill_at(["prune"], env, rng.uniform(0.0, duration * 1.2), backups)
            else:
                # (aim at the first half: on a busy machine the window varies from run to run)
                _kill_in_window(["prune"], env, [backups / "manifest.json"], rng.uniform(0, window / 2))
            at_kill = {e["path"] for e in manifest(backups)}
            present = {f for f in _doomed_files(backups, listed) if f.exists()}
            problems += _manifest_sound(backups)
            r = run_cli("prune", "--json", env=env)
            if r.returncode != 0:
                problems.append(f"next prune failed: {r.stderr.strip()}")
            problems += _manifest_sound(backups)
            after = manifest(backups)
            tracked = {e["path"] for e in after}
            # what this trial's prunes deleted, and where in their work the kill landed
            doomed = listed - tracked
            files = set(_doomed_files(backups, doomed))
            if doomed and not doomed & at_kill and files & present:
                inside += 1  # the manifest no longer listed them, the files were not all gone yet
                partial += len(files & present) < len(files)
            if len(after) != 1:  # all are older than RETENTION_DAYS=7: only the protected newest stays
                problems.append(f"the next prune kept {len(after)} archives, not only the newest")
            for a in backups.glob("daily/*.tar.gz"):
                if str(a.relative_to(backups)) not in tracked:
                    problems.append(f"untracked archive left after the next prune: {a.name}")
            for s in backups.glob("daily/*.sha256"):
                if not s.with_name(s.name[:-7]).exists():
                    problems.append(f"orphan checksum file: {s.name}")
        if not more_trials(i, inside):
            break
    evidence.require(
        inside >= TRIALS // 5, f"only {inside} kills landed inside the critical window: too few to tell"
    )
    evidence.publish(
        f"{inside} kills landed inside the critical window, between the manifest write and the last "
        f"deletion; {partial} of them with some but not all files deleted"
    )


@reliability(
    "SIGKILL during `restore`",
    "each restored path is either wholly old or wholly new; the next restore succeeds and removes the "
    "staging",
)
def test_sigkill_during_restore(tmp_path: Path, evidence: Evidence) -> None:
    """A third of the kills land at a random time of the whole restore; the others wait for the
    first path to be swapped into place and land a random fraction of the measured swap window
    later. A kill inside the window leaves some paths restored and others untouched."""
    data, backups, env = _setup(tmp_path)
    logs = data.parent / "logs"
    targets = {"storage": data / "storage", "auth": data / "auth", "cfg": data / "config.json", "logs": logs}
    # eight more paths (single files), so that the swaps take a few milliseconds, not a fraction of one
    extra = {f"c{i}": data / "conf" / f"c{i}.json" for i in range(8)}
    for p in extra.values():
        write(p, "as archived")
    targets.update(extra)
    env = {**env, "GOFR_PLOT_BACKUP_PATHS": PATHS + "".join(f",{n}:conf/{n}.json" for n in extra)}
    old = {n: snapshot(p) for n, p in targets.items()}  # what the archive holds ("old" live state)
    r = run_cli("now", "--json", env=env)
    archive = json.loads(r.stdout)["filename"]
    # the live data moves on: this is what a killed restore must leave whole, or replace whole
    shutil.rmtree(data / "storage" / "nested")
    write(data / "storage" / "new.txt", "new")
    write(data / "config.json", "changed")
    write(logs / "app.log", "rotated\n")
    for p in extra.values():
        write(p, "changed since")
    saved = tmp_path / "saved"
    for n, p in targets.items():
        if p.is_dir():
            shutil.copytree(p, saved / n, symlinks=True)
        else:
            saved.mkdir(exist_ok=True)
            shutil.copy2(p, saved / n)
    new = {n: snapshot(p) for n, p in targets.items()}
    changed = [p for n, p in targets.items() if old[n] != new[n]]

    def live_again() -> None:
        for n, p in targets.items():
            if p.is_dir():
                shutil.rmtree(p)
                shutil.copytree(saved / n, p, symlinks=True)
            else:
                shutil.copy2(saved / n, p)

    # one undisturbed restore: how long it takes, and how long its swaps take (first to last)
    t0 = time.monotonic()
    p = popen_cli("restore", archive, "--yes", env=env)
    swaps: dict[Path, float] = {}
    inos = {c: _ino(c) for c in changed}
    while p.poll() is None:
        for c in changed:
            if c not in swaps and _ino(c) != inos[c]:
                swaps[c] = time.monotonic()
    p.communicate()
    assert p.returncode == 0 and len(swaps) == len(changed), swaps
    duration, window = time.monotonic() - t0, max(swaps.values()) - min(swaps.values())
    rng = random.Random(SEED + 2)
    mixed_states = 0
    for i in range(3 * TRIALS):
        with evidence.trial() as problems:
            live_again()
            assert {n: snapshot(p) for n, p in targets.items()} == new
            args = ["restore", archive, "--yes"]
            if i % 3 == 0:
                _kill_at(args, env, rng.uniform(0.0, duration), data)
            else:
                _kill_in_window(args, env, changed, rng.uniform(0, window))
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
        if not more_trials(i, mixed_states):
            break
    evidence.require(
        mixed_states >= TRIALS // 5,
        f"only {mixed_states} kills landed between two paths' swaps: too few to tell",
    )
    evidence.publish(
        f"{mixed_states} kills landed inside the critical window, between the first and the last "
        "path's swap (some paths restored, others untouched)"
    )


# -- a real full disk -------------------------------------------------------------------------------
@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "small") as mnt:
        yield mnt


DISK_FULL_TRIALS = 5


@reliability(
    "Disk full during a backup (8 MB tmpfs)",
    "one-line error and exit 1 within 30 s; partial removed; older archives intact and verified; status "
    "unhealthy; nothing deleted to make room",
)
@pytest.mark.timeout(DISK_FULL_TRIALS * 120)
def test_disk_full_during_a_backup(tmp_path: Path, small_fs: Path, evidence: Evidence) -> None:
    data = tmp_path / "data"
    write(data / "s" / "text.log", "the same line again and again\n" * 100_000)  # 3 MB -> ~KB
    env = cli_env(data, small_fs, **{"GOFR_{P}_BACKUP_PATHS": "s:s"})
    for _ in range(DISK_FULL_TRIALS):
        with evidence.trial():
            for p in small_fs.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            (data / "s" / "random.bin").unlink(missing_ok=True)
            for _ in range(2):
                assert run_cli("now", env=env).returncode == 0
            good = manifest(small_fs)
            # 20 MB that does not compress: the estimate from the last ratio passes, the disk fills up
            write(data / "s" / "random.bin", os.urandom(20 << 20))
            r = run_cli("now", env=env, timeout=30)  # a clean failure takes about a second
            assert r.returncode == 1
            last = r.stderr.strip().splitlines()[-1]  # (the lines before it are the run's log)
            assert last.startswith("gofr-backup: cannot write archive"), r.stderr
            assert "No space left on device" in last, r.stderr
            assert list(small_fs.rglob("*.partial")) == []
            assert manifest(small_fs) == good
            assert all(verify_archive(small_fs / e["path"], e["sha256"]).ok for e in good)
            st = run_cli("status", "--json", env=env)
            assert st.returncode == 1 and "No space left" in json.loads(st.stdout)["last_failure"]["error"]
            # housekeeping never deletes good archives to make room
            assert run_cli("prune", env=env).returncode == 0
            assert manifest(small_fs) == good
    evidence.publish()


@reliability("Backup that cannot fit", "refused before writing, with the estimate in the error")
def test_preflight_refuses_a_backup_that_cannot_fit(
    tmp_path: Path, small_fs: Path, evidence: Evidence
) -> None:
    with evidence.trial():
        data = tmp_path / "data"
        write(data / "s" / "random.bin", os.urandom(12 << 20))
        env = cli_env(data, small_fs, **{"GOFR_{P}_BACKUP_PATHS": "s:s"})
        r = run_cli("now", env=env)
        assert r.returncode == 1
        err = r.stderr.strip().splitlines()[-1]
        # 12 MiB x ratio 1.0 (no archive yet) x SPACE_MARGIN 1.2 + 1 MiB
        assert "not enough space" in err and "needs about 16.1 MB" in err and "free" in err, err
        assert "ratio 1.0" in err
        assert list(small_fs.rglob("*.tar*")) == []
    evidence.publish()


# -- corruption in every position --------------------------------------------------------------------
def _corrupt(p: Path, where: str) -> None:
    b = bytearray(p.read_bytes())
    pos = {"head": 20, "middle": len(b) // 2, "tail": len(b) - 12}[where]
    for k in range(8):
        b[min(pos + k, len(b) - 1)] ^= 0xA5
    p.write_bytes(bytes(b))


POSITIONS = ["manifest", "state", "sidecar", "archive-head", "archive-middle", "archive-tail"]


@reliability("Corruption: {where}", "detected and reported; no good archive deleted")
@pytest.mark.parametrize("where", POSITIONS)
def test_corruption_is_detected_and_never_deletes_a_good_archive(
    tmp_path: Path, where: str, evidence: Evidence
) -> None:
    with evidence.trial():
        _corruption_trial(tmp_path, where)
    evidence.publish()


def _corruption_trial(tmp_path: Path, where: str) -> None:
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
        why = json.loads(st.stdout)["reasons"][0]
        assert st.returncode == 1 and f"state file {backups}/.gofr-plot.state.json unreadable" in why, why
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


# -- directories that are not what they should be ------------------------------------------------------
@reliability(
    "Read-only backup dir",
    "a backup to a read-only backup volume gives one line naming the directory and what to do, exit 1",
)
def test_read_only_backup_dir(tmp_path: Path, evidence: Evidence) -> None:
    data, backups, env = _setup(tmp_path)
    backups.mkdir()
    with ro_mount(backups, tmp_path / "ro-backups") as ro, evidence.trial():
        r = run_cli("now", env={**env, "GOFR_PLOT_BACKUP_DIR": str(ro)})
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
        assert "not writable (Read-only file system)" in r.stderr and "mount it read-write" in r.stderr
    evidence.publish()


@reliability(
    "Missing data dir",
    "a backup of a data dir that does not exist gives one line naming the directory and the variable, exit 1",
)
def test_missing_data_dir(tmp_path: Path, evidence: Evidence) -> None:
    with evidence.trial():
        env = cli_env(tmp_path / "nope", tmp_path / "b")
        r = run_cli("now", env=env)
        assert r.returncode == 1 and "the data directory" in r.stderr and "does not exist" in r.stderr
        assert "DATA_DIR" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    evidence.publish()


@reliability(
    "Backup dir not writable (permission denied)",
    "one line naming the directory and the uid:gid the process runs as, exit 1; nothing written",
)
def test_permission_denied_on_backup_dir(tmp_path: Path, evidence: Evidence) -> None:
    needs(os.geteuid() == 0 and bool(shutil.which("setpriv")), "needs root and setpriv")
    with evidence.trial():
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
    evidence.publish()
