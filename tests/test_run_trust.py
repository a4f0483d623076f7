"""Can a green run be trusted? A configured path that vanishes while `now` archives it, a data
volume that is unmounted or emptied, what killed runs leave in the backup dir, and a failure on a
full disk. Real files, a real tmpfs, the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gofrtest import cli_env, manifest, needs, partials, popen_cli, run_cli, snapshot, write


# -- a configured path that vanishes while `now` archives ------------------------------------------
def _open_in(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open now."""
    fds = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fds)
    except FileNotFoundError:
        return False
    for fd in names:
        try:
            if os.readlink(f"{fds}/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


def _while_reading(env: dict[str, str], big: Path, act: Callable[[], None], tries: int = 5) -> Any:
    """Run `now`; the moment it has ``big`` open (archiving it: the header, which declares every
    path, is written), stop it with SIGSTOP, check it still has ``big`` open (so nothing after
    ``big`` in the walk has been read), run ``act``, and let it go on. A run whose moment was
    missed is thrown away and tried again, so the race is hit on purpose, never by luck.
    Returns the finished run's (returncode, stdout, stderr)."""
    backups = Path(env["GOFR_PLOT_BACKUP_DIR"])
    for _ in range(tries):
        p = popen_cli("now", "--json", env=env)
        hit = False
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline:
            if _open_in(p.pid, big):
                os.kill(p.pid, signal.SIGSTOP)
                if _open_in(p.pid, big):
                    hit = True
                    act()
                os.kill(p.pid, signal.SIGCONT)
                break
        out, err = p.communicate(timeout=120)
        if hit:
            return p.returncode, out, err
        for d in backups.iterdir():  # missed: start again from an empty backup dir
            shutil.rmtree(d) if d.is_dir() else d.unlink()
    raise AssertionError(f"`now` was never caught reading {big} in {tries} runs")


def _end(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive) as t:
        for m in t:
            if m.name == ".gofr-backup-end.json":
                return json.loads(t.extractfile(m).read())  # type: ignore[union-attr]
    raise AssertionError("no end marker")


def _members(archive: Path) -> list[str]:
    with tarfile.open(archive) as t:
        return [m.name for m in t if not m.name.startswith(".gofr")]


def _vanish_setup(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    data = tmp_path / "data"
    # storage/big comes first in the walk (PATHS order, then names sorted): 9 MiB (more than
    # SMALL_FILE), streamed through one descriptor while gzip takes a moment over it
    big = write(data / "storage" / "big", os.urandom(9 << 20))
    for i in range(5):
        write(data / "storage" / "zz" / f"f{i}", f"zz {i}\n")
    for i in range(20):
        write(data / "auth" / f"k{i}", f"key {i}\n", 0o600)
    env = cli_env(
        data,
        tmp_path / "backups",
        **{
            "GOFR_{P}_BACKUP_PATHS": "storage:storage,auth:auth",
            "GOFR_{P}_BACKUP_COMPRESSION_LEVEL": "1",
            "GOFR_{P}_BACKUP_REPORT_FILE": "off",
        },
    )
    return data, env, big


def test_a_path_that_vanishes_while_now_archives_makes_the_backup_incomplete_and_restore_keeps_it(
    tmp_path: Path,
) -> None:
    """`auth` is declared in the header, then moved away (a volume unmounted) before the walk gets
    to it: the archive holds none of it. It must not be a complete archive whose restore deletes
    the live `auth`."""
    data, env, big = _vanish_setup(tmp_path)
    aside = tmp_path / "auth.aside"
    rc, out, err = _while_reading(env, big, lambda: (data / "auth").rename(aside))
    aside.rename(data / "auth")  # the volume is back
    before = snapshot(data / "auth")
    assert rc == 3, err
    assert "auth" in err and "vanished" in err, err
    e = json.loads(out)
    assert e["complete"] is False
    archive = tmp_path / "backups" / e["path"]
    end = _end(archive)
    assert end["complete"] is False and str(data / "auth") in end["unreadable"], end
    assert not [m for m in _members(archive) if m.startswith("auth/")]
    assert run_cli("status", env=env).returncode == 1
    # restore: refused without --allow-incomplete (naming auth), and with it auth is left alone
    r = run_cli("restore", e["filename"], "--yes", env=env)
    assert r.returncode == 2 and "auth" in r.stderr and "--allow-incomplete" in r.stderr, r.stderr
    r = run_cli("restore", e["filename"], "--allow-incomplete", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert snapshot(data / "auth") == before
    assert (data / "storage" / "big").read_bytes() == big.read_bytes()


def test_a_path_moved_away_in_the_middle_of_its_own_walk_makes_the_backup_incomplete(
    tmp_path: Path,
) -> None:
    """`storage` itself goes while its first file is read: the archive holds that file but not
    `storage/zz/*`; restoring it as complete would delete them."""
    data, env, big = _vanish_setup(tmp_path)
    aside = tmp_path / "storage.aside"
    rc, out, err = _while_reading(env, big, lambda: (data / "storage").rename(aside))
    aside.rename(data / "storage")
    assert rc == 3, err
    e = json.loads(out)
    end = _end(tmp_path / "backups" / e["path"])
    assert end["complete"] is False and str(data / "storage") in end["unreadable"], end
    before = snapshot(data / "storage")
    r = run_cli("restore", e["filename"], "--allow-incomplete", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert snapshot(data / "storage") == before  # storage/zz/* is still there


def test_a_subdirectory_that_vanishes_mid_walk_is_a_warning_not_an_incomplete_backup(
    tmp_path: Path,
) -> None:
    """Live data churns: a directory inside a path that goes away is not a reason for alarm."""
    data, env, big = _vanish_setup(tmp_path)
    rc, out, err = _while_reading(env, big, lambda: shutil.rmtree(data / "storage" / "zz"))
    assert rc == 0, err
    e = json.loads(out)
    assert e["complete"] is True
    assert any("zz" in w and "vanished" in w for w in e["warnings"]), e["warnings"]
    assert run_cli("status", env=env).returncode == 0


# -- an unmounted or emptied data volume -------------------------------------------------------------
@pytest.fixture
def data_volume(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs as the data volume, so that the test can unmount it as an operator would."""
    needs(os.geteuid() == 0, "mounting a tmpfs needs root")
    mnt = tmp_path / "data"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    needs(r.returncode == 0, f"cannot mount tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def _empty_env(tmp_path: Path, data: Path, **extra: str) -> dict[str, str]:
    return cli_env(
        data,
        tmp_path / "backups",
        **{
            "GOFR_{P}_BACKUP_PATHS": "storage:storage,auth:auth",
            "GOFR_{P}_BACKUP_REPORT_FILE": "off",
            **extra,
        },
    )


def test_an_unmounted_data_volume_fails_the_backup_loudly_and_costs_no_archive(
    tmp_path: Path, data_volume: Path
) -> None:
    data = data_volume
    for i in range(100):
        write(data / "storage" / f"d{i}", f"doc {i}\n")
    write(data / "auth" / "k", "k\n")
    env = _empty_env(tmp_path, data, **{"GOFR_{P}_BACKUP_MAX_COUNT": "1"})
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0, r.stderr
    good = json.loads(r.stdout)
    subprocess.run(["umount", str(data)], check=True)  # the volume is gone ...
    (data / "storage").mkdir()  # ... and compose made its mount points again, empty
    (data / "auth").mkdir()
    before = sorted(p.name for p in (tmp_path / "backups" / "daily").iterdir())
    time.sleep(1.1)  # a new archive would get a new name
    r = run_cli("now", env=env)
    assert r.returncode == 1, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("gofr-backup: ") and "Traceback" not in r.stderr, r.stderr
    for word in ("storage", "auth", good["filename"], str(good["file_count"]), "unmounted", "ALLOW_EMPTY"):
        assert word in line, (word, line)
    # nothing written, nothing pruned (MAX_COUNT=1 would have taken the good archive)
    assert sorted(p.name for p in (tmp_path / "backups" / "daily").iterdir()) == before
    assert [e["filename"] for e in manifest(tmp_path / "backups")] == [good["filename"]]
    st = run_cli("status", "--json", env=env)
    assert st.returncode == 1 and "unmounted" in json.loads(st.stdout)["last_failure"]["error"], st.stdout
    # the operator who means it says so
    r = run_cli("now", "--json", env={**env, "GOFR_PLOT_BACKUP_ALLOW_EMPTY": "yes"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["file_count"] == 2


def test_a_first_backup_of_empty_directories_is_made_with_a_warning(tmp_path: Path) -> None:
    """A new deployment whose app has not written anything yet: nothing to lose, so the backup is
    made (and says the data holds no file); once a backup has held files, emptiness fails."""
    data = tmp_path / "data"
    (data / "storage").mkdir(parents=True)
    (data / "auth").mkdir()
    env = _empty_env(tmp_path, data)
    for _ in range(2):
        r = run_cli("now", "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert any("no regular file" in w for w in json.loads(r.stdout)["warnings"]), r.stdout
        time.sleep(1.1)
    write(data / "storage" / "doc", "doc\n")
    assert run_cli("now", env=env).returncode == 0
    (data / "storage" / "doc").unlink()
    time.sleep(1.1)
    r = run_cli("now", env=env)
    assert r.returncode == 1 and "unmounted or emptied" in r.stderr, r.stderr


def test_allow_empty_is_a_validated_boolean(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "storage").mkdir(parents=True)
    r = run_cli("config", "--json", env=_empty_env(tmp_path, data, **{"GOFR_{P}_BACKUP_ALLOW_EMPTY": "On"}))
    assert r.returncode == 0 and json.loads(r.stdout)["allow_empty"] is True, r.stderr
    r = run_cli("config", env=_empty_env(tmp_path, data))
    assert "allow_empty = False" in r.stdout
    r = run_cli("now", env=_empty_env(tmp_path, data, **{"GOFR_{P}_BACKUP_ALLOW_EMPTY": "maybe"}))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "GOFR_PLOT_BACKUP_ALLOW_EMPTY='maybe'" in r.stderr and "true/false" in r.stderr
    assert not (tmp_path / "backups").exists()


# -- what killed runs leave in the backup dir ----------------------------------------------------------
def _tmpfs(where: Path, size: str) -> None:
    needs(os.geteuid() == 0, "mounting a tmpfs needs root")
    where.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    needs(r.returncode == 0, f"cannot mount tmpfs here: {r.stderr.strip()}")


@pytest.fixture
def small_backups(tmp_path: Path) -> Iterator[Path]:
    """A 12 MB tmpfs as the backup volume."""
    mnt = tmp_path / "backups"
    _tmpfs(mnt, "12m")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def _kill_while_writing(env: dict[str, str], backups: Path, at_least: int = 1 << 20) -> None:
    """SIGKILL a `now` once its partial archive holds ``at_least`` bytes (stopped first, so the
    size is what it leaves)."""
    old = set(partials(backups))
    p = popen_cli("now", env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        if any(n >= at_least for f, n in partials(backups).items() if f not in old):
            os.kill(p.pid, signal.SIGSTOP)
            break
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL


def test_partials_of_killed_runs_are_removed_before_the_space_check(
    tmp_path: Path, small_backups: Path
) -> None:
    """`now`s killed mid-write leave their partial archives (and the run's temp dir); once they
    take the room the next `now` needs, it must remove them (it holds the run lock: their writers
    are dead) rather than fail 'not enough space' until someone runs `prune`. (With the fix the
    second killed run already removed the first one's partial: they no longer pile up.)"""
    data = tmp_path / "data"
    write(data / "storage" / "big", os.urandom(3 << 20))
    write(data / "auth" / "k", "k\n")
    env = _empty_env(tmp_path, data)
    backups = small_backups
    assert run_cli("now", env=env).returncode == 0
    good = manifest(backups)
    for _ in range(2):
        _kill_while_writing(env, backups)
    left = partials(backups)
    assert left, "the killed runs left no partial archive"
    tmp = backups / ".gofr-plot.tmp"
    assert tmp.is_dir()  # the killed run's scratch dir (SQLite snapshots) is left too
    write(tmp / "snapshot-0.db", os.urandom(1 << 20))  # as a snapshot being copied when it died
    # fill the rest, so that only what the dead runs left stands between the next run and its room
    st = os.statvfs(backups)
    need = int((3 << 20) * 1.2) + (1 << 20) + (256 << 10)  # the pre-flight's estimate, and some
    free = st.f_bavail * st.f_frsize
    assert free + sum(left.values()) + (1 << 20) > need + (512 << 10), "the test's sizes do not fit 12 MB"
    if free > need - (512 << 10):
        write(backups / "filler", b"\0" * (free - need + (512 << 10)))
    r = run_cli("now", env=env)
    assert r.returncode == 0, r.stderr
    assert partials(backups) == {}
    assert not tmp.exists()
    for p in left:
        assert p.name in r.stderr, r.stderr  # what was removed is logged, by name
    assert [e["filename"] for e in manifest(backups)][: len(good)] == [e["filename"] for e in good]


# -- a failure on a full disk is recorded -----------------------------------------------------------------
def _fill(fs: Path) -> None:
    """Write until the file system says ENOSPC, in smaller and smaller pieces: nothing is left."""
    fd = os.open(fs / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for piece in (1 << 20, 64 << 10, 4 << 10, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * piece)
            except OSError as e:
                assert e.errno == 28, e  # ENOSPC
    finally:
        os.close(fd)
    f_bavail = os.statvfs(fs).f_bavail
    assert f_bavail == 0, f_bavail


def test_a_backup_that_fails_on_a_full_disk_makes_status_unhealthy(
    tmp_path: Path, small_backups: Path
) -> None:
    data = tmp_path / "data"
    write(data / "storage" / "r1", os.urandom(1 << 20))
    write(data / "auth" / "k", "k\n")
    env = _empty_env(tmp_path, data)
    assert run_cli("now", env=env).returncode == 0
    assert run_cli("status", env=env).returncode == 0
    _fill(small_backups)
    write(data / "storage" / "new", "more\n")
    r = run_cli("now", env=env)
    assert r.returncode == 1 and "not enough space" in r.stderr, r.stderr
    st = run_cli("status", "--json", env=env)
    assert st.returncode == 1, st.stdout
    d = json.loads(st.stdout)
    assert "not enough space" in d["last_failure"]["error"], d
    assert d["last_success"]["filename"] == manifest(small_backups)[0]["filename"]  # nothing else was lost
    # once there is room again, the next backup is recorded as usual
    (small_backups / "filler").unlink()
    assert run_cli("now", env=env).returncode == 0
    assert run_cli("status", env=env).returncode == 0
