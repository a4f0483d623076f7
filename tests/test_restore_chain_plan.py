"""A chain restore writes only what survives to the chain's end (issue 17's restore time).

Before the passes, the incrementals' member headers are read (extract.Superseded): a file or hard
link that a later archive stores again, or that the last archive's listing of its directory
leaves out, is read, hashed and checked but not written; and every directory of the restored tree
is made before the full's files go into it. Both are optimisations that must never change what
is restored: a hard link to a file that was not written, a file where a directory was made, a
skipped file still in the final tree or a made directory no archive holds all start the pass
again writing everything (extract.Rewind). Every check compares real trees: what the CLI restores
with the live tree of that day and with what GNU tar alone makes of the same archives.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from gofrtest import run_cli, snapshot, write
from hypothesis import given, settings
from hypothesis import strategies as st
from test_restore_chain import T0, TAR, Chain, gnu_restore

from gofr_common.backup import archive_format, dumpdir, extract
from gofr_common.backup.restore import Link, RestoreRequest, restore_chain

pytestmark = pytest.mark.skipif(TAR is None, reason="GNU tar is not installed")


def _restore(ch: Chain, day: int, dest: Path) -> None:
    r = run_cli("restore", ch.results[day].filename, "--target", str(dest), "--yes", env=ch.env)
    assert r.returncode == 0, r.stderr


def _both(ch: Chain, day: int, want: dict[str, object], tmp: Path) -> None:
    """Our restore and GNU tar alone both give ``want`` for restore point ``day``."""
    _restore(ch, day, tmp / "ours")
    assert snapshot(tmp / "ours" / "storage") == want
    gnu_restore(ch.archives(day), tmp / "gnu")
    assert snapshot(tmp / "gnu" / "storage") == want


def restore_into_small_disk(ch: Chain, day: int, want: dict[str, object], tmp_path: Path) -> None:
    """Restore point ``day`` with the CLI into a real 8 MB tmpfs: it equals ``want``, and nothing
    else (no staging) is left there."""
    from gofrtest import tmpfs

    with tmpfs(tmp_path / "small", "size=8m") as mnt:
        _restore(ch, day, mnt)
        assert snapshot(mnt / "storage") == want
        assert sorted(os.listdir(mnt)) == ["storage"]


def test_a_file_a_later_day_deletes_is_never_written(tmp_path: Path) -> None:
    """A 10 MB file in the full, deleted the next day: the day-1 restore needs no room for it.
    Into a real 8 MB tmpfs it fits (before: refused, the member claims more than is free)."""
    data = tmp_path / "data"
    write(data / "storage" / "big.bin", os.urandom(10 << 20), 0o644, T0)
    write(data / "storage" / "keep.txt", "kept", 0o644, T0)
    ch = Chain(data, tmp_path / "backups", "storage:storage")
    ch.day(0)
    (data / "storage" / "big.bin").unlink()
    write(data / "storage" / "new.txt", "new", 0o644, T0 + 1)
    ch.day(1)
    restore_into_small_disk(ch, 1, snapshot(data / "storage"), tmp_path)


def test_a_hard_link_whose_target_a_later_day_deletes(tmp_path: Path) -> None:
    """The full holds a.txt and its hard link b.txt; day 1 deletes a.txt. On a real file system
    b.txt's ctime changes with its link count, so day 1 stores it again: restored exactly."""
    data = tmp_path / "data"
    write(data / "storage" / "a.txt", "shared content", 0o644, T0)
    os.link(data / "storage" / "a.txt", data / "storage" / "b.txt")
    write(data / "storage" / "c.txt", "c", 0o644, T0)
    ch = Chain(data, tmp_path / "backups", "storage:storage")
    ch.day(0)
    (data / "storage" / "a.txt").unlink()
    ch.day(1)
    want = snapshot(data / "storage")
    assert "b.txt" in want and "a.txt" not in want
    _both(ch, 1, want, tmp_path)
    assert (tmp_path / "ours" / "storage" / "b.txt").read_text() == "shared content"


def test_a_link_member_whose_target_is_not_written_rewinds(tmp_path: Path) -> None:
    """An incremental (as another writer could make it) that lists b.txt as unchanged and no
    longer lists a.txt: b.txt comes from the full's hard-link member to a.txt, which the plan does
    not write. The pass starts again writing everything, and b.txt comes back whole."""
    import tarfile

    from gofrtest import craft_archive

    data = tmp_path / "data"
    write(data / "storage" / "a.txt", "shared content", 0o644, T0)
    os.link(data / "storage" / "a.txt", data / "storage" / "b.txt")
    ch = Chain(data, tmp_path / "backups", "storage:storage")
    full = ch.day(0)
    d = tarfile.TarInfo("storage")
    d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, T0
    d.pax_headers = {"GNU.dumpdir": "Nb.txt\0\0"}
    link = {"filename": full.filename, "sha256": full.sha256}
    inc = craft_archive(
        tmp_path / "backups" / "daily" / "gofr-plot_daily_20260302T020000Z.tar.gz",
        [(d, None)],
        meta_extra={"kind": "incremental", "chain": {"full": link, "parent": link}},
    )
    plan = extract.Superseded.read([full.path, inc], lambda: False)
    assert plan is not None and plan.skip(0, "storage/a.txt") and not plan.skip(0, "storage/b.txt")
    restore_chain(ch.cfg, [Link(full.path, full.sha256), Link(inc)], RestoreRequest(target=tmp_path / "out"))
    assert sorted(os.listdir(tmp_path / "out" / "storage")) == ["b.txt"]
    assert (tmp_path / "out" / "storage" / "b.txt").read_text() == "shared content"


@pytest.mark.parametrize("new_kind", ["dir", "symlink"])
def test_a_file_that_becomes_a_directory_or_a_symlink(tmp_path: Path, new_kind: str) -> None:
    """x is a file in the full and a directory (or a symlink to one) on day 2; y the other way
    round. The directories made before the full's pass are in the way of the full's file x:
    the pass starts again without them, and every day restores exactly."""
    data = tmp_path / "data"
    live = data / "storage"
    write(live / "x", "file x", 0o644, T0)
    write(live / "y" / "inner.txt", "in y", 0o644, T0)
    write(live / "z.txt", "z", 0o644, T0)
    ch = Chain(data, tmp_path / "backups", "storage:storage")
    ch.day(0)
    wants = [snapshot(live)]
    write(live / "z.txt", "z2", 0o644, T0 + 1)
    ch.day(1)
    wants.append(snapshot(live))
    (live / "x").unlink()
    if new_kind == "dir":
        write(live / "x" / "deep" / "f.txt", "now a dir", 0o644, T0 + 2)
    else:
        write(live / "target" / "f.txt", "behind a link", 0o644, T0 + 2)
        os.symlink("target", live / "x")
    (live / "y" / "inner.txt").unlink()
    (live / "y").rmdir()
    write(live / "y", "now a file", 0o644, T0 + 2)
    ch.day(2)
    wants.append(snapshot(live))
    for day in (2, 1):
        _both(ch, day, wants[day], tmp_path / f"day{day}")


def test_a_wrong_plan_never_restores_short_or_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan is read from archives before they are verified, so it is never trusted: a plan
    that skips every member, and one that makes directories no archive holds, still restore
    the exact tree (the pass is started again without it)."""
    data = tmp_path / "data"
    live = data / "storage"
    for i in range(5):
        write(live / f"d{i}" / f"f{i}.txt", f"file {i}", 0o644, T0)
    ch = Chain(data, tmp_path / "backups", "storage:storage")
    ch.day(0)
    write(live / "d1" / "f1.txt", "changed", 0o644, T0 + 1)
    (live / "d2" / "f2.txt").unlink()
    ch.day(1)
    want = snapshot(live)
    links = [Link(w.path, w.sha256) for w in ch.results]
    rewinds: list[str] = []
    real_init = extract.Rewind.__init__

    def counted(self: extract.Rewind, *a: object) -> None:
        rewinds.append(str(a))
        real_init(self, *a)

    monkeypatch.setattr(extract.Rewind, "__init__", counted)
    monkeypatch.setattr(extract.Superseded, "skip", lambda self, i, name: True)
    restore_chain(ch.cfg, links, RestoreRequest(target=tmp_path / "all-skipped"))
    assert snapshot(tmp_path / "all-skipped" / "storage") == want
    assert rewinds and "was not written" in rewinds[0]
    monkeypatch.undo()
    monkeypatch.setattr(extract.Rewind, "__init__", counted)
    rewinds.clear()
    real_start = extract.Superseded.start

    def with_a_stranger(archives: list[Path], should_stop: object) -> extract.Superseded | None:
        plan = real_start(archives, should_stop)  # type: ignore[arg-type]
        assert plan is not None
        plan.dirs.append("storage/nobody/holds/this")
        return plan

    monkeypatch.setattr(extract.Superseded, "start", staticmethod(with_a_stranger))
    restore_chain(ch.cfg, links, RestoreRequest(target=tmp_path / "stranger"))
    assert snapshot(tmp_path / "stranger" / "storage") == want
    assert rewinds and "made before the pass" in rewinds[0]


def _changed_and_linked(tmp_path: Path, names: tuple[str, ...]) -> tuple[Chain, Path]:
    """A chain of two days: ``d/<name>.txt`` for each name (day 0), then ``changed.txt`` changed
    and a new hard-link pair ``linked.txt``/``link2.txt`` (day 1). Returns it and the live path."""
    live = tmp_path / "data" / "storage"
    for n in names:
        write(live / "d" / f"{n}.txt", n, 0o644, T0)
    ch = Chain(tmp_path / "data", tmp_path / "backups", "storage:storage")
    ch.day(0)
    write(live / "d" / "changed.txt", "changed!", 0o644, T0 + 1)
    write(live / "d" / "linked.txt", "linked", 0o644, T0 + 1)
    os.link(live / "d" / "linked.txt", live / "d" / "link2.txt")
    ch.day(1)
    return ch, live


def test_the_plan_skips_what_later_days_replace_and_writes_the_rest(tmp_path: Path) -> None:
    """What the plan decides, from real archives: the full's copy of a file changed on day 1 or
    deleted on day 2 is skipped; unchanged files, the day's own files and files an incremental
    hard-links to are written; nothing of the last archive is skipped."""
    ch, live = _changed_and_linked(tmp_path, ("same", "changed", "deleted", "renamed"))
    (live / "d" / "deleted.txt").unlink()
    os.rename(live / "d" / "renamed.txt", live / "d" / "renamed2.txt")
    ch.day(2)
    plan = extract.Superseded.read([w.path for w in ch.results], lambda: False)
    assert plan is not None
    skipped = {n for n in ("same", "changed", "deleted", "renamed") if plan.skip(0, f"storage/d/{n}.txt")}
    assert skipped == {"changed", "deleted", "renamed"}
    assert not plan.skip(1, "storage/d/changed.txt")  # day 1's copy is the one that survives
    assert not plan.skip(1, "storage/d/linked.txt")  # an incremental hard-links to it
    assert not plan.skip(2, "storage/d/renamed2.txt")  # the last archive: never
    assert "storage/d" in plan.dirs
    _both(ch, 2, snapshot(live), tmp_path)


# -- dumpdir.parse is dumpdir.decode, faster ------------------------------------------------------
NAMES = st.binary(min_size=1, max_size=6).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)


def _decoded(value: bytes) -> dict[str, set[str]] | str:
    try:
        out: dict[str, set[str]] = {tag: set() for tag in dumpdir.TAGS}
        for tag, raw in dumpdir.decode(value):
            out[tag].add(os.fsdecode(raw))
        return out
    except ValueError:
        return "ValueError"


def _parsed(value: bytes) -> dict[str, set[str]] | str:
    try:
        got = dumpdir.parse(value)
    except ValueError:
        return "ValueError"
    return {dumpdir.STORED: got.stored, dumpdir.UNCHANGED: got.unchanged, dumpdir.DIRECTORY: got.dirs}


@settings(max_examples=400, deadline=None)
@given(entries=st.dictionaries(NAMES, st.sampled_from(dumpdir.TAGS), max_size=8))
def test_parse_reads_every_listing_encode_writes_as_decode_does(entries: dict[bytes, str]) -> None:
    value = dumpdir.encode([(tag, name) for name, tag in entries.items()])
    assert _parsed(value) == _decoded(value) != "ValueError"


@settings(max_examples=600, deadline=None)
@given(
    entries=st.dictionaries(NAMES, st.sampled_from(dumpdir.TAGS), max_size=5),
    cut=st.integers(0, 60),
    flip=st.integers(0, 60),
    byte=st.sampled_from([0, 47, 0x41, 0x44, 0x4E, 0x59, 0x80, 0xC3, 0xFF]),
)
def test_parse_refuses_exactly_what_decode_refuses(
    entries: dict[bytes, str], cut: int, flip: int, byte: int
) -> None:
    value = bytearray(dumpdir.encode([(tag, name) for name, tag in entries.items()]))
    if flip < len(value):
        value[flip] = byte
    mangled = bytes(value[: len(value) - cut % (len(value) + 1)])
    assert _parsed(mangled) == _decoded(mangled)


# -- the plan's helper process (Superseded.start) ---------------------------------------------------
def test_the_helper_finds_what_one_read_finds(tmp_path: Path) -> None:
    """``start`` reads the last archive itself and the ones between it and the full in a helper
    process; once waited for, it holds what ``read`` finds in one go (names, hard links, the
    last tree), and it skips the same members."""
    ch, live = _changed_and_linked(tmp_path, ("same", "changed", "deleted", "renamed", "late"))
    (live / "d" / "deleted.txt").unlink()
    write(live / "d" / "late.txt", "late", 0o644, T0 + 2)
    ch.day(2)
    os.rename(live / "d" / "renamed.txt", live / "d" / "renamed2.txt")
    ch.day(3)
    paths = [w.path for w in ch.results]
    whole = extract.Superseded.read(paths, lambda: False)
    ahead = extract.Superseded.start(paths, lambda: False)
    assert whole is not None and ahead is not None
    try:
        assert ahead._helper is not None  # two archives lie between the full and the last
        ahead.wait(lambda: False)
        assert ahead._helper is None and not ahead._partial
    finally:
        ahead.close()
    assert (ahead.stored, ahead.linked) == (whole.stored, whole.linked)
    assert (ahead.final, ahead.final_dirs, ahead.dirs) == (whole.final, whole.final_dirs, whole.dirs)
    assert ahead.stored["storage/d/late.txt"] == 2 and (1, "storage/d/link2.txt") in ahead.linked
    names = [f"storage/d/{n}" for n in sorted(os.listdir(live / "d"))] + ["storage/d/changed.txt"]
    for i in range(4):
        assert [ahead.skip(i, n) for n in names] == [whole.skip(i, n) for n in names]


def test_without_its_helper_the_plan_skips_nothing_of_an_incremental(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper that cannot start, or dies, leaves the plan partial: the full's members the last
    archive replaces are still skipped, an incremental's never; the restore is exact."""
    data = tmp_path / "data"
    live = data / "storage"
    for n in ("a", "b", "c"):
        write(live / "d" / f"{n}.txt", n, 0o644, T0)
    ch = Chain(data, tmp_path / "backups", "storage:storage")
    ch.day(0)
    write(live / "d" / "a.txt", "a1", 0o644, T0 + 1)
    ch.day(1)
    write(live / "d" / "a.txt", "a2", 0o644, T0 + 2)
    write(live / "d" / "b.txt", "b2", 0o644, T0 + 2)
    ch.day(2)
    paths = [w.path for w in ch.results]
    monkeypatch.setattr(extract.plan_worker, "spawn", lambda archives: None)
    plan = extract.Superseded.start(paths, lambda: False)
    assert plan is not None and plan._partial
    assert plan.skip(0, "storage/d/a.txt") and plan.skip(0, "storage/d/b.txt")
    assert not plan.skip(1, "storage/d/a.txt")  # day 2 stores it again, but the plan cannot know
    monkeypatch.undo()
    real_spawn = extract.plan_worker.spawn

    def killed(archives: list[Path]) -> object:
        h = real_spawn(archives)
        assert h is not None
        h.proc.kill()
        return h

    monkeypatch.setattr(extract.plan_worker, "spawn", killed)
    plan = extract.Superseded.start(paths, lambda: False)
    assert plan is not None
    plan.wait(lambda: False)
    assert plan._partial and not plan.skip(1, "storage/d/a.txt")
    restore_chain(ch.cfg, [Link(w.path, w.sha256) for w in ch.results], RestoreRequest(target=tmp_path / "r"))
    assert snapshot(tmp_path / "r" / "storage") == snapshot(live)


def test_the_helper_dies_with_the_restore(tmp_path: Path) -> None:
    """A restore killed with SIGKILL takes its helper with it (PR_SET_PDEATHSIG): here the
    helper is stuck opening a FIFO no one writes, so only its parent's death can end it."""
    fifo = tmp_path / "stuck.tar.gz"
    os.mkfifo(fifo)
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from gofr_common.backup import plan_worker\n"
        f"h = plan_worker.spawn([Path({str(fifo)!r})])\n"
        "print(h.proc.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    src = str(Path(extract.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": src}
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout is not None
        pid = int(p.stdout.readline())
        time.sleep(0.5)
        assert _alive(pid)
        p.kill()
        p.wait()
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), "the helper outlived the restore"
    finally:
        p.kill()
        with contextlib.suppress(ProcessLookupError):
            if _alive(pid):
                os.kill(pid, 9)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


def test_tarfile_still_has_the_search_archive_format_speeds_up() -> None:
    """archive_format's stand-in for tarfile's ``re`` helps only while tarfile's pax parser
    searches with exactly this pattern; a record that is there is still found."""
    source = inspect.getsource(tarfile.TarInfo._proc_pax)
    assert 're.search(br"\\d+ hdrcharset=([^\\n]+)\\n", buf)' in source
    pattern = rb"\d+ hdrcharset=([^\n]+)\n"
    assert tarfile.re.search(pattern, b"12 path=abc\n") is None  # type: ignore[attr-defined]
    found = tarfile.re.search(pattern, b"12 path=abc\n21 hdrcharset=BINARY\n")  # type: ignore[attr-defined]
    assert found is not None and found.group(1) == b"BINARY"


def test_a_name_tarfile_marks_binary_reads_back_the_same(tmp_path: Path) -> None:
    """A pax header with ``hdrcharset=BINARY`` (tarfile writes one for a name that is not
    UTF-8) is still decoded with it through open_tar_stream."""
    name = os.fsdecode(b"storage/caf\xe9-\xff.txt")
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape") as t:
        ti = tarfile.TarInfo(name)
        ti.pax_headers = {"comment": "x"}
        t.addfile(ti, io.BytesIO(b""))
    assert b"hdrcharset=BINARY" in path.read_bytes()
    with archive_format.open_tar_stream(path) as tar:
        assert [m.name for m in tar] == [name]


def test_a_helper_that_hangs_is_given_up() -> None:
    """The incrementals' pass waits for the helper only as long as it has run already (at least
    ``at_least`` seconds), then goes on with a partial plan; the hung process is killed."""
    proc = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    h = extract.plan_worker.Helper(proc)
    try:
        t0 = time.monotonic()
        h.wait(lambda: False, at_least=0.5)
        assert 0.5 <= time.monotonic() - t0 < 5
        assert h.result() is None
    finally:
        h.close()
    assert proc.poll() is not None
