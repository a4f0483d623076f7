"""Can a green run be trusted? A configured path that vanishes while `now` archives it, a data
volume that is unmounted or emptied, what killed runs leave in the backup dir, and a failure on a
full disk. Real files, a real tmpfs, the CLI as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gofrtest import (
    cli_env,
    manifest,
    needs,
    partials,
    popen_cli,
    run_cli,
    snapshot,
    tmpfs,
    without_dac,
    write,
)


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


def _while_reading(
    env: dict[str, str],
    big: Path,
    act: Callable[[], None],
    tries: int = 5,
    before_each: Callable[[], None] = lambda: None,
) -> Any:
    """Run `now`; the moment it has ``big`` open (archiving it: the header, which declares every
    path, is written), stop it with SIGSTOP, check it still has ``big`` open (so nothing after
    ``big`` in the walk has been read), run ``act``, and let it go on. A run whose moment was
    missed is thrown away and tried again, so the race is hit on purpose, never by luck.
    Returns the finished run's (returncode, stdout, stderr)."""
    backups = Path(env["GOFR_PLOT_BACKUP_DIR"])
    for _ in range(tries):
        before_each()
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
    return data, _vanish_env(data, tmp_path / "backups"), big


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
    e = _incomplete_without_auth(tmp_path, rc, out, err, data / "auth", "vanished")
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


def _incomplete_without_auth(
    tmp_path: Path, rc: int, out: str, err: str, auth: Path, why: str = "replaced"
) -> dict[str, Any]:
    """The run that lost `auth` before its walk: exit 3 naming it (``why``: how), and an
    incomplete archive without any of it, whose end marker lists it; the archive's entry."""
    assert rc == 3, err
    assert "auth" in err and why in err, err
    e: dict[str, Any] = json.loads(out)
    assert e["complete"] is False
    archive = tmp_path / "backups" / e["path"]
    end = _end(archive)
    assert end["complete"] is False and str(auth) in end["unreadable"], end
    assert not [m for m in _members(archive) if m.startswith("auth/")]
    return e
    assert run_cli("status", env=_env_of(tmp_path)).returncode == 1
    # what `auth` holds (its own mtime aside: a mount point's restore stages inside it)
    before = {k: v for k, v in snapshot(auth).items() if k != "."}
    r = run_cli("restore", "--latest", "--dry-run", env=_env_of(tmp_path))
    assert e["filename"] not in r.stdout, r.stdout  # --latest never picks it
    r = run_cli("restore", e["filename"], "--allow-incomplete", "--yes", env=_env_of(tmp_path))
    assert r.returncode == 0, r.stderr
    assert {k: v for k, v in snapshot(auth).items() if k != "."} == before and before, before


def _env_of(tmp_path: Path) -> dict[str, str]:
    return _vanish_env(tmp_path / "data", tmp_path / "backups")


def _vanish_env(data: Path, backups: Path) -> dict[str, str]:
    return cli_env(
        data,
        backups,
        **{
            "GOFR_{P}_BACKUP_PATHS": "storage:storage,auth:auth",
            "GOFR_{P}_BACKUP_COMPRESSION_LEVEL": "1",
            "GOFR_{P}_BACKUP_REPORT_FILE": "off",
        },
    )


def test_a_path_replaced_by_another_directory_before_the_walk_reaches_it_makes_the_backup_incomplete(
    tmp_path: Path,
) -> None:
    """`auth` is swapped for a new, empty directory after the backup started, before the walk gets
    to it: the walk must not take the empty directory for `auth` (a complete archive of it would
    make a restore delete the live keys)."""
    data, env, big = _vanish_setup(tmp_path)
    aside = tmp_path / "auth.aside"

    def swap() -> None:
        (data / "auth").rename(aside)
        (data / "auth").mkdir()

    rc, out, err = _while_reading(env, big, swap)
    (data / "auth").rmdir()
    aside.rename(data / "auth")  # the real one is back
    _incomplete_without_auth(tmp_path, rc, out, err, data / "auth")


def test_a_path_whose_volume_is_unmounted_before_the_walk_reaches_it_makes_the_backup_incomplete(
    tmp_path: Path,
) -> None:
    """`auth` is a real tmpfs, unmounted after the backup started and before the walk gets to it:
    the empty mount point left behind is not `auth`."""
    needs(os.geteuid() == 0, "mounting a tmpfs needs root")
    data, env, big = _vanish_setup(tmp_path)
    auth = data / "auth"
    keys = {p.name: p.read_bytes() for p in auth.iterdir()}
    shutil.rmtree(auth)
    auth.mkdir()

    def mount() -> None:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(auth)], capture_output=True, text=True
        )
        needs(r.returncode == 0, f"cannot mount tmpfs here: {r.stderr.strip()}")
        for k, v in keys.items():
            write(auth / k, v, 0o600)

    mount()
    try:
        backups = tmp_path / "backups"

        def again() -> None:  # a missed run is retried: the volume must be there at its start
            if not os.path.ismount(auth):
                mount()

        def umount() -> None:
            subprocess.run(["umount", str(auth)], check=True)

        rc, out, err = _while_reading(env, big, umount, before_each=again)
        mount()  # the volume is back
        assert backups.is_dir()
        _incomplete_without_auth(tmp_path, rc, out, err, auth)
        assert sorted(p.name for p in auth.iterdir()) == sorted(keys)
    finally:
        while os.path.ismount(auth):
            subprocess.run(["umount", "-l", str(auth)], check=False, capture_output=True)


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
    with tmpfs(tmp_path / "data") as mnt:
        yield mnt


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


def _stop(p: subprocess.Popen[str]) -> bool:
    """SIGSTOP ``p`` and wait until every thread of it is stopped, so its files no longer change;
    False if it exited instead. (``p`` is not reaped before ``poll`` says so: the pid is ours.)"""
    os.kill(p.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 30
    while p.poll() is None:
        states = []
        with contextlib.suppress(FileNotFoundError):
            for t in os.listdir(f"/proc/{p.pid}/task"):
                with contextlib.suppress(FileNotFoundError), open(f"/proc/{p.pid}/task/{t}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
        if states and all(s == "T" for s in states):
            return True
        assert time.monotonic() < deadline, f"`now` did not stop: {states}"
    return False


def _stopped_with_a_partial(
    p: subprocess.Popen[str], backups: Path, old: set[Path], at_least: int
) -> Path | None:
    """Let ``p`` (a `now`) run until its new partial archive holds ``at_least`` bytes; return that
    partial with ``p`` stopped, or None if ``p`` got past writing first. Once the partial appears,
    ``p`` runs in slices of a few milliseconds and is stopped between them, where its size is read:
    it outruns the test only if the test is kept off the CPU for the rest of the write."""
    deadline = time.monotonic() + 60
    while not any(f not in old for f in partials(backups)):  # its setup, up to the partial
        if p.poll() is not None:
            return None
        assert time.monotonic() < deadline, "`now` wrote no partial archive in 60 s"
    while _stop(p):
        new = {f: n for f, n in partials(backups).items() if f not in old}
        for f, n in new.items():
            if n >= at_least:
                return f
        os.kill(p.pid, signal.SIGCONT)
        if not new:
            return None  # renamed into place: the archive is written
        assert time.monotonic() < deadline, f"the partial archive stayed under {at_least} bytes: {new}"
        time.sleep(0.002)
    return None


def _kill_while_writing(env: dict[str, str], backups: Path, at_least: int = 1 << 20, tries: int = 5) -> Path:
    """SIGKILL a `now` while its partial archive holds at least ``at_least`` bytes (stopped first,
    so the size is what it leaves); returns that partial. A run that finished first (a loaded
    machine) is undone, the backup dir put back as it was before it (its archive would take the
    room the test measures), and tried again."""
    with tempfile.TemporaryDirectory() as aside:
        before = Path(aside) / "backups"
        shutil.copytree(backups, before, symlinks=True)
        err = ""
        for _ in range(tries):
            old = set(partials(backups))
            p = popen_cli("now", env=env)
            try:
                partial = _stopped_with_a_partial(p, backups, old, at_least)
                if partial is not None:
                    os.kill(p.pid, signal.SIGKILL)
                    p.communicate(timeout=30)
                    assert p.returncode == -signal.SIGKILL
                    assert partials(backups).get(partial, 0) >= at_least, partials(backups)
                    return partial
                _, err = p.communicate(timeout=120)
            finally:
                if p.poll() is None:  # an assertion above: leave no stopped process behind
                    p.kill()
                    p.communicate(timeout=30)
            for d in backups.iterdir():  # missed: undo the run
                shutil.rmtree(d) if d.is_dir() and not d.is_symlink() else d.unlink()
            shutil.copytree(before, backups, symlinks=True, dirs_exist_ok=True)
    raise AssertionError(f"`now` was never caught writing in {tries} runs; the last said: {err}")


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
    killed = [_kill_while_writing(env, backups) for _ in range(2)]
    left = partials(backups)
    assert left.get(killed[-1], 0) >= 1 << 20, ("the killed runs left no partial archive", killed, left)
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


def test_a_full_disk_failure_is_recorded_over_an_unpadded_state_file_of_an_older_version(
    tmp_path: Path, small_backups: Path
) -> None:
    """An older version wrote the state file unpadded (a few hundred bytes): the first full disk
    after the upgrade must still be recorded, in the rest of the file's block."""
    data = tmp_path / "data"
    write(data / "storage" / "r1", os.urandom(1 << 20))
    write(data / "auth" / "k", "k\n")
    env = _empty_env(tmp_path, data)
    assert run_cli("now", env=env).returncode == 0
    state = small_backups / ".gofr-plot.state.json"
    state.write_text(json.dumps(json.loads(state.read_text())))  # as an older version left it
    assert state.stat().st_size < 1024
    _fill(small_backups)
    write(data / "storage" / "new", "more\n")
    r = run_cli("now", env=env)
    assert r.returncode == 1 and "not enough space" in r.stderr, r.stderr
    assert "could not be recorded" not in r.stderr, r.stderr
    st = run_cli("status", "--json", env=env)
    assert st.returncode == 1, st.stdout
    d = json.loads(st.stdout)
    assert "not enough space" in d["last_failure"]["error"], d
    assert d["last_success"]["filename"] == manifest(small_backups)[0]["filename"]


def test_a_state_file_that_is_a_symlink_is_neither_read_nor_written_through(
    tmp_path: Path, small_backups: Path
) -> None:
    """Writes refuse a symlinked state file (O_NOFOLLOW); status must not read through it either
    (a healthy copy elsewhere would hide failures), and a failure that cannot be recorded says so."""
    data = tmp_path / "data"
    write(data / "storage" / "r1", os.urandom(1 << 20))
    write(data / "auth" / "k", "k\n")
    env = _empty_env(tmp_path, data)
    assert run_cli("now", env=env).returncode == 0
    state = small_backups / ".gofr-plot.state.json"
    victim = tmp_path / "victim.json"
    victim.write_bytes(state.read_bytes())  # a healthy state, padded, outside the backup dir
    state.unlink()
    state.symlink_to(victim)
    st = run_cli("status", "--json", env=env)
    assert st.returncode == 1, st.stdout
    assert any("is a symlink" in r for r in json.loads(st.stdout)["reasons"]), st.stdout
    _fill(small_backups)
    write(data / "storage" / "new", "more\n")
    before = victim.read_bytes()
    r = run_cli("now", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("gofr-backup: not enough space"), r.stderr
    said = [x for x in r.stderr.splitlines() if "could not be recorded in the state file" in x]
    assert len(said) == 1 and "status will not show it" in said[0], r.stderr
    assert victim.read_bytes() == before and state.is_symlink()
    assert run_cli("status", env=env).returncode == 1
    # with room again, the next run replaces the link with a state file of its own
    (small_backups / "filler").unlink()
    assert run_cli("now", env=env).returncode == 0
    assert not state.is_symlink() and victim.read_bytes() == before
    assert run_cli("status", env=env).returncode == 0


def test_one_allow_empty_backup_does_not_let_later_empty_backups_through(tmp_path: Path) -> None:
    """ALLOW_EMPTY=true for one run (the operator meant it then) must not turn the guard off for
    good: the next empty run without it compares with the newest archive that held files."""
    data = tmp_path / "data"
    write(data / "storage" / "doc", "doc\n")
    (data / "auth").mkdir()
    env = _empty_env(tmp_path, data)
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0, r.stderr
    good = json.loads(r.stdout)
    (data / "storage" / "doc").unlink()
    time.sleep(1.1)
    r = run_cli("now", "--json", env={**env, "GOFR_PLOT_BACKUP_ALLOW_EMPTY": "true"})
    assert r.returncode == 0, r.stderr
    time.sleep(1.1)
    before = sorted(p.name for p in (tmp_path / "backups" / "daily").iterdir())
    r = run_cli("now", env=env)
    assert r.returncode == 1 and "unmounted or emptied" in r.stderr, r.stderr
    assert good["filename"] in r.stderr and "Backed up" not in r.stderr, r.stderr
    assert sorted(p.name for p in (tmp_path / "backups" / "daily").iterdir()) == before


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_a_stray_file_or_symlink_named_like_the_temp_dir_is_removed_not_a_failure_of_every_backup(
    tmp_path: Path, kind: str
) -> None:
    """`.gofr-plot.tmp` is the run's scratch dir; a file or symlink of that name (left by hand, or
    by another tool) made every backup fail with 'cannot write archive in .../daily: File exists'.
    The cleanup under the run lock removes it (a link is unlinked, never followed)."""
    data = tmp_path / "data"
    write(data / "storage" / "doc", "doc\n")
    write(data / "auth" / "k", "k\n")
    env = _empty_env(tmp_path, data)
    backups = tmp_path / "backups"
    backups.mkdir()
    stray = backups / ".gofr-plot.tmp"
    victim = write(tmp_path / "victim" / "keep", "precious\n")
    if kind == "file":
        stray.write_text("stray\n")
    else:
        stray.symlink_to(victim.parent)
    r = run_cli("now", env=env)
    assert r.returncode == 0, r.stderr
    assert ".gofr-plot.tmp" in r.stderr, r.stderr  # what was removed is logged
    assert not os.path.lexists(stray)
    assert victim.read_text() == "precious\n" and sorted(os.listdir(victim.parent)) == ["keep"]
    assert len(manifest(backups)) == 1


def test_a_temp_dir_name_that_cannot_be_cleared_is_named_in_the_error(tmp_path: Path) -> None:
    """Something in the way that the cleanup does not remove (here: a FIFO, neither ours nor a
    plain file): the one line names `.gofr-plot.tmp`, not the tier directory."""
    data = tmp_path / "data"
    write(data / "storage" / "doc", "doc\n")
    env = _empty_env(tmp_path, data)
    backups = tmp_path / "backups"
    backups.mkdir()
    os.mkfifo(backups / ".gofr-plot.tmp")
    r = run_cli("now", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("gofr-backup: ") and ".gofr-plot.tmp" in last, r.stderr
    assert not list(backups.rglob("*.tar.gz*")) and stat.S_ISFIFO(
        os.lstat(backups / ".gofr-plot.tmp").st_mode
    )


def test_an_incomplete_archive_that_held_files_arms_the_empty_data_guard(tmp_path: Path) -> None:
    """Every backup incomplete (one file the backup user cannot read: the README's uid-mismatch
    case), then the volume empties: the archives that hold the data are incomplete, but they hold
    it, and an empty backup after them is refused (it was made, and retention then took them)."""
    needs(os.geteuid() == 0 and shutil.which("setpriv") is not None, "needs root and setpriv")
    data = tmp_path / "data"
    write(data / "storage" / "a", "a\n")
    write(data / "auth" / "k", "k\n")
    secret = write(data / "storage" / "secret", "s\n", 0o000)
    os.chown(secret, 1234, 1234)
    env = _empty_env(tmp_path, data, **{"GOFR_{P}_BACKUP_MAX_COUNT": "1"})
    r = subprocess.run(without_dac("now", "--json"), env=env, capture_output=True, text=True)
    assert r.returncode == 3, r.stderr  # incomplete, holding a and k
    held = json.loads(r.stdout)["filename"]
    for p in (data / "storage" / "a", data / "auth" / "k", secret):
        p.unlink()
    time.sleep(1.1)
    r = subprocess.run(without_dac("now"), env=env, capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert held in r.stderr and "unmounted or emptied" in r.stderr, r.stderr
    assert [e["filename"] for e in manifest(tmp_path / "backups")] == [held]
