"""The incremental archive format (issue 17): directory members carrying GNU tar's dumpdir in the
pax keyword GNU.dumpdir (dumpdir.py), checked against the real GNU tar binary.

An archive here has our layout (``.gofr-backup.json`` first, the tree under ``storage/``, the end
member last). A "full" archive stores everything; an "incremental" one stores every directory (with
its dumpdir) and only the non-directories that are new or differ, by path, from the tree the
previous archive recorded. ``tar --listed-incremental=/dev/null -xf`` of FULL, INC1, ... INCn into
an empty directory must give the tree of day n exactly: names, types, contents, modes, mtimes,
symlink targets; deletions and renames included. Plain ``tar -xf`` and tarfile's ``r|`` must read
every archive without error, and the dumpdir must never become a file.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gofr_common.backup import dumpdir
from gofr_common.backup.tarstream import TarStream

TAR = shutil.which("tar")
pytestmark = pytest.mark.skipif(TAR is None, reason="GNU tar is not installed")

TOP = "storage"
# tarfile's own PAX fallback (TarStream.add, a non-UTF-8 file name) writes hdrcharset=BINARY, which
# GNU tar 1.34 does not know: a warning, exit status 0. Not from the dumpdir headers.
KNOWN_WARNING = "Ignoring unknown extended header keyword 'hdrcharset'"

Entry = tuple[object, ...]


def snapshot(root: Path) -> dict[bytes, Entry]:
    """{relative path (bytes): what is there}, not following symlinks."""
    out: dict[bytes, Entry] = {}
    base = bytes(root)
    for dirpath, dirnames, filenames in os.walk(base):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, base)] = entry(p)
    return out


def entry(p: bytes) -> Entry:
    st_ = os.lstat(p)
    mode = stat.S_IMODE(st_.st_mode)
    if stat.S_ISDIR(st_.st_mode):
        return ("d", mode, int(st_.st_mtime))
    if stat.S_ISLNK(st_.st_mode):
        return ("l", os.readlink(p))
    assert stat.S_ISREG(st_.st_mode), p
    with open(p, "rb") as f:
        return ("f", mode, int(st_.st_mtime), f.read())


def _info(name: bytes, st_: os.stat_result) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(os.fsdecode(name))
    ti.mode = stat.S_IMODE(st_.st_mode)
    ti.mtime = int(st_.st_mtime)
    return ti


def _json(t: TarStream, name: str, obj: dict[str, object]) -> None:
    data = json.dumps(obj).encode()
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), 0o644
    t.add(ti, data)


def write_archive(root: Path, out: Path, prev: dict[bytes, Entry] | None) -> dict[bytes, Entry]:
    """Write ``root`` as ``TOP/...`` into ``out``: every directory with its dumpdir; a
    non-directory only when ``prev`` is None (full) or it is new or differs from ``prev`` at its
    path (incremental). Returns the tree it recorded (the ``prev`` of the next day)."""
    now = snapshot(root)
    with open(out, "wb") as f:
        t = TarStream(f)
        _json(t, ".gofr-backup.json", {"tier": "full" if prev is None else "incremental"})

        def walk(path: bytes, arc: bytes, rel: bytes) -> None:
            listing: list[tuple[str, bytes]] = []
            stored: list[tuple[bytes, bytes, bytes]] = []
            for name in sorted(os.listdir(path)):
                p, a, r = path + b"/" + name, arc + b"/" + name, (rel + b"/" + name if rel else name)
                if now[r][0] == "d":
                    listing.append((dumpdir.DIRECTORY, name))
                    stored.append((p, a, r))
                elif prev is None or prev.get(r) != now[r]:
                    listing.append((dumpdir.STORED, name))
                    stored.append((p, a, r))
                else:
                    listing.append((dumpdir.UNCHANGED, name))
            ti = _info(arc, os.lstat(path))
            ti.type = tarfile.DIRTYPE
            t.add_dir(ti, dumpdir.encode(listing))
            for p, a, r in stored:
                if now[r][0] == "d":
                    walk(p, a, r)
                    continue
                ti = _info(a, os.lstat(p))
                if now[r][0] == "l":
                    ti.type, ti.linkname = tarfile.SYMTYPE, os.fsdecode(os.readlink(p))
                    t.add(ti)
                else:
                    with open(p, "rb") as src:
                        data = src.read()
                    ti.size = len(data)
                    t.add(ti, data)

        walk(bytes(root), TOP.encode(), b"")
        _json(t, ".gofr-backup-end.json", {"complete": True})
        t.close()
    return now


def tar(*args: str | Path, cwd: Path, allow: str = KNOWN_WARNING) -> subprocess.CompletedProcess[str]:
    """Run GNU tar; it must exit 0 with nothing on stderr but warnings containing ``allow``."""
    assert TAR is not None
    r = subprocess.run([TAR, *map(str, args)], cwd=cwd, capture_output=True, text=True, errors="replace")
    unexpected = [line for line in r.stderr.splitlines() if KNOWN_WARNING not in line and allow not in line]
    assert r.returncode == 0 and not unexpected, f"tar {args}: exit {r.returncode}\n{r.stderr}"
    return r


def restore_chain(archives: list[Path], dest: Path) -> dict[bytes, Entry]:
    dest.mkdir()
    for a in archives:
        tar("--listed-incremental=/dev/null", "-xf", a, cwd=dest)
    return snapshot(dest / TOP)


def read_stream(archive: Path) -> list[tarfile.TarInfo]:
    """Every member, as our restore reads archives (tarfile ``r|``)."""
    with open(archive, "rb") as f, tarfile.open(fileobj=f, mode="r|", errors="surrogateescape") as t:
        return list(t)


def diff(want: dict[bytes, Entry], got: dict[bytes, Entry]) -> list[str]:
    return [
        f"{k!r}: want {want.get(k)!r}, got {got.get(k)!r}"
        for k in sorted(set(want) | set(got))
        if want.get(k) != got.get(k)
    ]


# -- the encoding -----------------------------------------------------------------------------
def test_encode_sorts_by_bytes_and_ends_with_an_extra_nul() -> None:
    v = dumpdir.encode([("Y", "b"), ("D", "B"), ("N", b"\xff"), ("Y", "a\nb c"), ("Y", "é")])
    assert v == b"DB\0Ya\nb c\0Yb\0Y\xc3\xa9\0N\xff\0\0"
    assert dumpdir.decode(v) == [
        ("D", b"B"),
        ("Y", b"a\nb c"),
        ("Y", b"b"),
        ("Y", b"\xc3\xa9"),
        ("N", b"\xff"),
    ]
    assert dumpdir.encode([]) == b"\0" and dumpdir.decode(b"\0") == []


@pytest.mark.parametrize(
    "entries",
    [
        [("Y", "a/b")],
        [("Y", "")],
        [("Y", ".")],
        [("Y", "..")],
        [("Q", "a")],
        [("Y", "a"), ("N", "a")],
        [("Y", b"a\0b")],
    ],
)
def test_encode_refuses_what_gnu_tar_would_misread(entries: list[tuple[str, str | bytes]]) -> None:
    with pytest.raises(ValueError):
        dumpdir.encode(entries)


@pytest.mark.parametrize("value", [b"", b"Ya\0", b"Yb\0Ya\0\0", b"Ra\0Tb\0\0", b"Ya/b\0\0"])
def test_decode_refuses_malformed(value: bytes) -> None:
    with pytest.raises(ValueError):
        dumpdir.decode(value)


def test_only_directories_carry_a_dumpdir() -> None:
    ti = tarfile.TarInfo("storage/f")
    with pytest.raises(ValueError):
        dumpdir.dir_header(ti, b"\0")


def test_same_dumpdir_as_gnu_tar_writes_itself(tmp_path: Path) -> None:
    """For a full backup our GNU.dumpdir values equal those GNU tar 1.34 writes with
    ``--format=posix --listed-incremental``, byte for byte."""
    live = tmp_path / TOP
    (live / "sub" / "deep").mkdir(parents=True)
    (live / "empty").mkdir()
    for name in (b"a", b"sub/b", b"with space", b"new\nline", b"bad\xfe", "ünï".encode()):
        (live / os.fsdecode(name)).write_bytes(b"x")
    os.symlink("a", live / "lnk")
    ours = tmp_path / "ours.tar"
    write_archive(live, ours, None)
    tar(
        "--format=posix",
        "--listed-incremental",
        tmp_path / "snar",
        "-cf",
        tmp_path / "gnu.tar",
        TOP,
        cwd=tmp_path,
    )

    def dumpdirs(a: Path) -> dict[str, bytes | None]:
        return {m.name.rstrip("/"): dumpdir.of_member(m) for m in read_stream(a) if m.isdir()}

    assert dumpdirs(ours) == dumpdirs(tmp_path / "gnu.tar")
    assert (
        dumpdirs(ours)[TOP]
        == b"Ya\0Ybad\xfe\0Dempty\0Ylnk\0Ynew\nline\0Dsub\0Ywith space\0Y\xc3\xbcn\xc3\xaf\0\0"
    )


def test_odd_directory_names_and_fields_that_need_pax(tmp_path: Path) -> None:
    """Directory members whose name, owner or mtime does not fit ustar: the dumpdir and the path
    share one pax header, GNU tar and tarfile read the same name, and no hdrcharset is written."""
    names = ["d" * 120, "/".join(["seg" * 30] * 4), "ünï", os.fsdecode(b"bad\xfe dir"), "new\nline dir"]
    archive = tmp_path / "a.tar"
    with open(archive, "wb") as f:
        t = TarStream(f)
        for i, n in enumerate(names):
            ti = tarfile.TarInfo(f"{TOP}/{n}")
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o750, 1_700_000_000 + i
            if i == 1:
                ti.uid, ti.uname, ti.gname = 1 << 22, "ü" * 40, "g"
            if i == 2:
                ti.mtime = -5
            t.add_dir(ti, dumpdir.encode([("Y", os.fsdecode(b"x\xff")), ("D", "sub")]))
        t.close()
    raw = archive.read_bytes()
    assert b"hdrcharset" not in raw
    members = read_stream(archive)
    assert [m.name for m in members] == [f"{TOP}/{n}" for n in names]
    assert all(m.isdir() and dumpdir.of_member(m) == b"Dsub\0Yx\xff\0\0" for m in members)
    assert members[1].uid == 1 << 22 and members[1].uname == "ü" * 40 and members[2].mtime == -5
    listing = tar("--listed-incremental=/dev/null", "-tvvf", archive, cwd=tmp_path).stdout
    assert listing.count("D sub\n") == len(names)
    dest = tmp_path / "x"
    dest.mkdir()
    tar("-xf", archive, cwd=dest, allow="implausibly old time stamp 1969-12-31 23:59:55")  # the mtime -5
    got = sorted(os.path.relpath(p, bytes(dest)) for p, _, _ in os.walk(bytes(dest)))
    for n in names:
        assert os.path.join(TOP.encode(), os.fsencode(n)) in got
    assert os.stat(dest / TOP / names[0]).st_mtime == 1_700_000_000


# -- full, then incremental: the scenario of issue 17 -------------------------------------------
def _write(p: Path, data: bytes, mtime: int | None = None) -> None:
    p.write_bytes(data)
    if mtime is not None:
        os.utime(p, (mtime, mtime))


def day0(live: Path) -> None:
    for d in ("sub/deep", "gone/inner", "olddir/kid", "dir2file/q", "tgt", "keep"):
        (live / d).mkdir(parents=True)
    for f, data in {
        "a": b"a0",
        "sub/b": b"b0",
        "sub/deep/c": b"c0",
        "gone/inner/y": b"y0",
        "olddir/f": b"f0",
        "olddir/kid/g": b"g0",
        "dir2file/q/r": b"r0",
        "file2dir": b"z0",
        "del": b"d0",
        "tgt/t": b"t0",
        "keep/unchanged": b"u0",
        "old name": b"renamed0",
    }.items():
        _write(live / f, data, 1_600_000_000)
    os.chmod(live / "keep/unchanged", 0o640)
    os.symlink("tgt", live / "l2dir")
    os.symlink("nowhere", live / "dangling")
    os.symlink("a", live / "lnk")
    os.symlink("../a", live / "sub/up")


def day1(live: Path) -> None:
    _write(live / "a", b"a1 changed")
    os.chmod(live / "sub/deep/c", 0o600)  # a mode change alone
    os.remove(live / "del")
    shutil.rmtree(live / "gone")
    os.rename(live / "olddir", live / "newdir")
    os.rename(live / "old name", live / "sub/new name")
    os.remove(live / "file2dir")
    (live / "file2dir").mkdir()
    _write(live / "file2dir/in", b"in1")
    shutil.rmtree(live / "dir2file")
    _write(live / "dir2file", b"now a file")
    os.remove(live / "l2dir")  # a symlink to a directory becomes a real directory
    (live / "l2dir").mkdir()
    _write(live / "l2dir/inside", b"i1")
    os.remove(live / "dangling")  # a dangling symlink, deleted
    os.remove(live / "lnk")
    os.symlink("sub", live / "lnk")  # retargeted
    os.symlink("keep", live / "sub/deep/c2dir")
    (live / "empty").mkdir()
    _write(live / os.fsdecode(b"we ird\nname \xff"), b"odd")
    (live / "ünï").mkdir()
    _write(live / "ünï" / "x", b"x1")
    _write(live / "new", b"new1")


def day2(live: Path) -> None:
    shutil.rmtree(live / "l2dir")  # a directory becomes a symlink again
    os.symlink("tgt", live / "l2dir")
    os.remove(live / "sub/deep/c2dir")
    (live / "sub/deep/c2dir").mkdir()  # a symlink to a directory, replaced by a directory
    os.rename(live / "newdir", live / "sub/moved")  # a directory moved down a level
    os.rename(live / "empty", live / "empty2")
    shutil.rmtree(live / "ünï")
    os.rename(live / os.fsdecode(b"we ird\nname \xff"), live / "plain")


def test_full_then_incrementals_restore_each_day_exactly(tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    day0(live)
    archives: list[Path] = []
    trees: list[dict[bytes, Entry]] = []
    prev: dict[bytes, Entry] | None = None
    for i, change in enumerate((None, day1, day2)):
        if change is not None:
            change(live)
        archives.append(tmp_path / f"{i}.tar")
        prev = write_archive(live, archives[-1], prev)
        trees.append(prev)
        assert diff(prev, restore_chain(archives, tmp_path / f"restored{i}")) == []

    # the incremental archives hold only what changed: the unchanged files are listed, not stored
    names = {m.name for m in read_stream(archives[1])}
    assert f"{TOP}/keep/unchanged" not in names and f"{TOP}/sub/b" not in names and f"{TOP}/a" in names
    top = {m.name: m for m in read_stream(archives[1])}[TOP]
    assert (dumpdir.UNCHANGED, b"tgt") not in dumpdir.decode(dumpdir.of_member(top) or b"")
    assert (dumpdir.UNCHANGED, b"keep") not in dumpdir.decode(dumpdir.of_member(top) or b"")
    keep = {m.name: m for m in read_stream(archives[1])}[f"{TOP}/keep"]
    assert dumpdir.decode(dumpdir.of_member(keep) or b"") == [(dumpdir.UNCHANGED, b"unchanged")]

    for i, a in enumerate(archives):
        # plain tar -x, without --listed-incremental: no error, no stray file from a dumpdir
        alone = tmp_path / f"plain{i}"
        alone.mkdir()
        tar("-xf", a, cwd=alone)
        got = snapshot(alone / TOP)
        stored = {os.fsencode(m.name[len(TOP) + 1 :]) for m in read_stream(a) if m.name.startswith(TOP + "/")}
        assert set(got) == stored
        assert all(got[k][0] == "d" for k in got if trees[i][k][0] == "d")
        if i == 0:
            assert diff(trees[0], got) == []  # the full archive alone is the whole tree
        # tarfile r|: every member, the directories as directories carrying their dumpdir
        members = read_stream(a)
        assert members[0].name == ".gofr-backup.json" and members[-1].name == ".gofr-backup-end.json"
        for m in members:
            assert m.isdir() or m.isreg() or m.issym()
            assert (dumpdir.of_member(m) is not None) == (m.isdir() and m.name.startswith(TOP))


def test_extraction_over_a_stale_tree_purges_it(tmp_path: Path) -> None:
    """Extracting an incremental archive where extra files, directories and links exist (say,
    left by a broken restore): --listed-incremental removes whatever the dumpdirs do not list."""
    live = tmp_path / "live"
    live.mkdir()
    day0(live)
    full = write_archive(live, tmp_path / "full.tar", None)
    day1(live)
    inc = write_archive(live, tmp_path / "inc.tar", full)
    dest = tmp_path / "dest"
    dest.mkdir()
    tar("--listed-incremental=/dev/null", "-xf", tmp_path / "full.tar", cwd=dest)
    (dest / TOP / "stray").mkdir()
    (dest / TOP / "stray" / "f").write_bytes(b"s")
    (dest / TOP / "sub" / "stray-file").write_bytes(b"s")
    os.symlink("/nonexistent", dest / TOP / "keep" / "stray-link")
    tar("--listed-incremental=/dev/null", "-xf", tmp_path / "inc.tar", cwd=dest)
    assert diff(inc, snapshot(dest / TOP)) == []


# -- the property: any few days of changes ------------------------------------------------------
NAMES = [b"a", b"b", b"c d", b"e\nf", b"\xff", "é".encode()]
OPS = ["add", "modify", "chmod", "delete", "rename", "mkdir", "symlink", "retype"]
Op = tuple[str, int, int, bytes]


def _apply(live: bytes, op: Op, day: int) -> None:
    kind, i, j, name = op
    everything = sorted(os.path.join(dp, n) for dp, dns, fns in os.walk(live) for n in dns + fns)
    dirs = [live] + [p for p in everything if os.path.isdir(p) and not os.path.islink(p)]
    d = dirs[j % len(dirs)]
    target = os.path.join(d, name)
    victim = everything[i % len(everything)] if everything else None

    def remove(p: bytes) -> None:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.remove(p)

    if kind in ("add", "mkdir", "symlink"):
        if os.path.lexists(target):
            return
        if kind == "add":
            _write(Path(os.fsdecode(target)), b"%d %d" % (day, i), 1_600_000_000 + i)
        elif kind == "mkdir":
            os.mkdir(target)
        else:
            os.symlink([b"a", b"..", b"nowhere", b"/etc"][i % 4], target)
    elif victim is None:
        return
    elif kind == "delete":
        remove(victim)
    elif kind == "rename":
        if os.path.lexists(target) or (target + b"/").startswith(victim + b"/"):
            return
        os.rename(victim, target)
    elif kind == "retype":  # the same name, another type
        was_dir = os.path.isdir(victim) and not os.path.islink(victim)
        remove(victim)
        if was_dir:
            _write(Path(os.fsdecode(victim)), b"was a dir %d" % day)
        else:
            os.mkdir(victim)
            _write(Path(os.fsdecode(victim + b"/x")), b"was a file %d" % day)
    elif os.path.isfile(victim) and not os.path.islink(victim):
        if kind == "modify":
            with open(victim, "ab") as f:
                f.write(b"+%d" % day)
        else:
            os.chmod(victim, [0o600, 0o640, 0o755][i % 3])


ops = st.tuples(st.sampled_from(OPS), st.integers(0, 99), st.integers(0, 99), st.sampled_from(NAMES))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(days=st.lists(st.lists(ops, max_size=8), min_size=1, max_size=4))
def test_any_days_of_changes_restore_exactly(tmp_path: Path, days: list[list[Op]]) -> None:
    work = tmp_path / "w"
    if work.exists():
        shutil.rmtree(work)
    live = work / "live"
    (live / "d1" / "d2").mkdir(parents=True)
    for p in ("f", "d1/g", "d1/d2/h"):
        _write(live / p, p.encode(), 1_600_000_000)
    os.symlink("d1", live / "ln")
    archives = [work / "0.tar"]
    prev = write_archive(live, archives[0], None)
    for n, day in enumerate(days, 1):
        for op in day:
            _apply(bytes(live), op, n)
        archives.append(work / f"{n}.tar")
        prev = write_archive(live, archives[-1], prev)
    assert diff(prev, restore_chain(archives, work / "restored")) == []
