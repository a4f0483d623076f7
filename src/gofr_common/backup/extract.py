"""Extract: verify and extract an archive in one pass into staging directories; or, for a dry run,
check every member the same way and compare it with the live data, writing nothing.

For each restored name, members are written below ``<parent>/.gofr-restore-<name>-<pid>/<name>``
(the same file system as the destination, so the swap is a rename) while verify_archive hashes the
archive and reads it to its end. The dry run and the restore run the same checks, on the member
names alone (no realpath per member):

- names: relative, no ``..``, in normal form, no duplicates, below a selected path, within what a
  file system holds (:func:`archive_format.member_limits_error`: name components, whole names and
  link targets, uid/gid and mtime ranges; ``verify`` applies the same limits);
- types: files, directories, hard links and symlinks; device nodes and FIFOs are refused;
- symlinks are data: any target (absolute, outside the path, dangling, chained) is restored as a
  link, verbatim. They are created after every other member (GNU tar's delayed links) in a parent
  reached with O_NOFOLLOW, and nothing is ever written through one: a member below a symlink
  member, or a symlink whose name is the parent of another member, is refused in either order;
- hard links point to a regular file restored earlier in the same path (and the same archive).

A **chain** (issue 17: a full, then incrementals, each read in one pass into the same staging, as
``tar --listed-incremental=/dev/null -x`` of each in turn would) goes through one Extractor:
:meth:`Extractor.next_archive` starts each archive after the first, resetting the per-archive rules
(duplicates, parents, hard links, delayed symlinks) while :attr:`Extractor.tree` keeps the staged
tree as the earlier archives left it. A directory member carrying a ``GNU.dumpdir`` first purges
from the staged directory every entry its listing does not name, every ``Y`` entry that is a
directory and every ``D`` entry that is not (never following a link); each ``N`` entry (unchanged,
not stored) must be a non-directory there already, or the chain is incomplete and the restore is
refused. A member replaces whatever an earlier archive staged at its name (another type too).

A chain's restore does not write what cannot survive to its end (:class:`Superseded`, built from
the incrementals' member headers: the last archive's before the full's pass, the others' by a
helper process during it, :mod:`.plan_worker`; the full is read once): a file or hard
link that a later archive stores again, or that the last archive's listing of its directory
leaves out (or lists as a directory). Such a member is still read, hashed and checked like every
other, and the staged tree (:attr:`Extractor.tree`) holds it as if it were written, so every
rule above (the ``N`` checks, the purges, the links) decides exactly as before. The one case it
cannot foresee, a hard link of the full to a file that was not written, starts the pass again
writing everything (:class:`Rewind`).

Files are opened with O_NOFOLLOW relative to directory descriptors (while files are written no
symlink exists in the staging yet). Owners are restored when running as root; modes without a
file's setuid/setgid bits (:func:`restored_mode`; a directory keeps setgid and sticky). Where a link leads once every link exists is worked out from the
archive's own link table (:meth:`Extractor.outside_links`, :meth:`Extractor.blocked`), so the dry
run reports and refuses exactly what the restore does.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import dumpdir, plan_worker
from .archive_format import member_limits_error, open_tar_stream
from .errors import LocalFault
from .fsutil import free_bytes, open_dir_nofollow
from .verify import StopVerify, read_member

STAGING_PREFIX = ".gofr-restore-"


@dataclass
class Target:
    name: str
    dest: Path
    mount: bool  # dest is a mount point: swap its children instead of itself
    base: Path = field(default_factory=Path)  # staging base; the staged tree is base/name
    # archive names ("s/secret.txt") of live paths an incomplete archive never saved: left as they are
    keep: list[str] = field(default_factory=list)
    keep_all: bool = False  # incomplete, and it is not known what is missing: remove nothing
    skip: list[str] = field(default_factory=list)  # children of a mount point left alone (nested mounts)
    merged: bool = False  # its staged tree was moved into the staged tree of the target it lies in

    @property
    def staged(self) -> Path:
        return self.base / self.name

    @property
    def parent(self) -> Path:
        """Where the staging base lives: beside dest, or inside it when dest is a mount point."""
        return self.dest if self.mount else self.dest.parent

    def live(self, name: str) -> str:
        """The live path of the archive name ``name`` (``<self.name>/...``)."""
        return str(self.dest) if name == self.name else f"{self.dest}/{name[len(self.name) + 1 :]}"


@dataclass
class Change:
    created: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # type, content, link target, mode or owner differ
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # live paths an incomplete archive leaves alone
    outside: list[str] = field(default_factory=list)  # "name -> target" of links that lead outside
    unchanged: int = 0


class Refused(Exception):
    """A member that would escape the target or is not plain data."""


class Rewind(Exception):
    """A hard link to a member that was not written (see :class:`Superseded`): the chain's pass
    starts again, writing every member."""


class Superseded:
    """Which members of a chain of ``n`` archives (0 the full, ``n - 1`` the one restored) a
    restore need not write, because nothing of them is left in the restored tree:

    - a file or hard link that a later archive of the chain stores again (that member replaces
      it, whatever its type);
    - in an archive before the last, a file or hard link whose directory the last archive lists
      without it, or lists it as a directory (the last archive's purge of that directory removes
      it: GNU tar's ``try_purge_directory``); or whose directory the last archive does not hold,
      because the nearest directory above it that it holds lists the way down without it or
      not as a directory (that purge removes the whole subtree).

    Never skipped: directories and symlinks, a configured path itself, anything of the last
    archive, and a file an incremental hard-links to. :meth:`read` builds it from the member
    headers of each incremental (archive 1 to ``n - 1``), in order."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.stored: dict[str, int] = {}  # name -> the newest incremental that stores a member there
        self.linked: set[tuple[int, str]] = set()  # (archive, name) a hard link of that archive leads to
        self.final: dict[str, set[str]] = {}  # the last archive's directories: their Y and N entries
        self.final_dirs: dict[str, set[str]] = {}  # ... and their D entries
        self.dirs: list[str] = []  # every directory of the last archive (of the restored tree), in order
        self._helper: plan_worker.Helper | None = None  # reading the middle archives (see start)
        self._partial = False  # no helper, or it failed: nothing of an incremental is skipped
        self._polls = 0

    @classmethod
    def read(cls, archives: list[Path], should_stop: Any) -> Superseded | None:
        """From the member headers of each incremental (``archives[1:]``; small: only the full is
        big), read in one go (:meth:`start` is what a restore uses; this is its reference in the
        tests). Best effort, and never trusted: any failure to read gives None (every member is
        written), and the restore's passes check everything as always; the end of each chain
        restore (``restore._extract_chain``) makes sure nothing it skipped is still needed and
        nothing made ahead is left over."""
        plan = cls(len(archives))
        return plan if plan._read(archives, range(1, len(archives)), should_stop) else None

    def _read(self, archives: list[Path], which: range, should_stop: Any) -> bool:
        try:
            for i in which:
                with open_tar_stream(archives[i], read_ahead=True) as tar:
                    for m in tar:
                        tar.members.clear()  # type: ignore[attr-defined]
                        self.member(i, m)
                        if should_stop():
                            return False
        except Exception:  # noqa: BLE001  a damaged archive: the restore's pass says what is wrong
            return False
        return True

    @classmethod
    def start(cls, archives: list[Path], should_stop: Any) -> Superseded | None:
        """:meth:`read`, in two parts so that the full's pass need not wait for it: the last
        archive (what the restored tree holds: enough for :meth:`Extractor.premake` and for most
        of what the full need not write) is read here; the ones between it and the full are read
        by a helper process (``python -m gofr_common.backup.plan_worker``) while the full's pass
        runs. What it finds is taken in as it comes (:meth:`poll`); the passes of the
        incrementals wait for it (:meth:`wait`). If the helper fails, the plan stays partial: it
        never skips a member of an incremental. :meth:`close` stops the helper."""
        plan = cls(len(archives))
        if not plan._read(archives, range(len(archives) - 1, len(archives)), should_stop):
            return None
        if len(archives) > 2:
            plan._helper = plan_worker.spawn(archives[1:-1])
            plan._partial = plan._helper is None
        return plan

    def poll(self) -> None:
        """Take in the helper's findings if they are there (a cheap check, every 256th call)."""
        self._polls += 1
        if self._helper is not None and self._polls % 256 == 0 and self._helper.ready():
            self._absorb()

    def wait(self, should_stop: Any) -> None:
        """Wait for the helper's findings (the incrementals' passes need all of them)."""
        if self._helper is not None:
            self._helper.wait(should_stop)
            self._absorb()

    def _absorb(self) -> None:
        assert self._helper is not None
        found = self._helper.result()
        self.close()
        if found is None:  # it failed: skip nothing of an incremental (the full's skips stand)
            self._partial = True
            return
        stored, linked = found
        for name, i in stored.items():  # archives 1 .. n-2: the last archive's own stay newest
            if self.stored.get(name, -1) < i + 1:
                self.stored[name] = i + 1
        self.linked.update((i + 1, name) for i, name in linked)

    def close(self) -> None:
        if self._helper is not None:
            self._helper.close()
            self._helper = None

    def member(self, i: int, m: tarfile.TarInfo) -> None:
        name = m.name.rstrip("/")
        self.stored[name] = i
        if m.islnk():
            self.linked.add((i, m.linkname.rstrip("/")))
        elif m.isdir() and i == self.n - 1:
            self.dirs.append(name)
            raw = dumpdir.of_member(m)
            if raw is not None:
                with contextlib.suppress(ValueError):  # malformed: the restore's pass refuses it
                    listing = dumpdir.parse(raw)
                    self.final[name] = listing.files
                    self.final_dirs[name] = listing.dirs

    def skip(self, i: int, name: str) -> bool:
        """Whether archive ``i``'s file or hard link ``name`` is gone by the end of the chain."""
        if self._helper is not None:
            self.poll()
        if i >= self.n - 1 or (i, name) in self.linked or (i > 0 and (self._partial or self._helper)):
            return False
        if self.stored.get(name, -1) > i:
            return True
        parent, _, leaf = name.rpartition("/")
        files = self.final.get(parent) if parent else None
        if files is not None:
            return leaf not in files
        # its directory is not one of the last archive's (a directory removed, renamed or turned
        # into a file since): gone if the nearest directory above it that is one does not list
        # the way down as a directory (that archive's purge of it removes the whole subtree)
        while "/" in parent:
            parent, _, sub = parent.rpartition("/")
            below = self.final_dirs.get(parent)
            if below is not None:
                return sub not in below
        return False


def _under(name: str, roots: list[str]) -> bool:
    return any(name == r or name.startswith(r + "/") for r in roots)


def topmost(names: list[str]) -> list[str]:
    """``names`` without those below another one of them."""
    out: list[str] = []
    for n in sorted(names):
        if not out or not n.startswith(out[-1] + "/"):
            out.append(n)
    return out


def restored_mode(m: tarfile.TarInfo) -> int:
    """The mode a member is restored with: a file's setuid/setgid (and sticky) bits never come
    back from an archive; a directory's setgid (new files inherit its group: the shared-group way
    to give the backup read access) and sticky (only owners delete, in a shared directory) do,
    since dropping them changes who may read or delete there."""
    return m.mode & (0o3777 if m.isdir() else 0o777)


def _kind(m: tarfile.TarInfo) -> str:
    return "d" if m.isdir() else "f" if m.isreg() else "l" if m.issym() else "h"


def resolve_link(links: dict[str, str], name: str) -> list[str] | None:
    """Where the symlink ``name`` leads once every link of the archive exists, as components from
    the archive's root; None when it leaves the archive (an absolute target, or more ``..`` than
    there are parents). A loop resolves to the link itself."""
    budget = [40]  # ELOOP, as the kernel counts

    def walk(base: list[str], target: str) -> list[str] | None:
        if target.startswith("/"):
            return None
        cur = list(base)
        for comp in target.split("/"):
            if comp in ("", "."):
                continue
            if comp == "..":
                if not cur:
                    return None
                cur.pop()
                continue
            cur.append(comp)
            key = "/".join(cur)
            if key in links:
                budget[0] -= 1
                if budget[0] < 0:
                    return name.split("/")
                r = walk(cur[:-1], links[key])
                if r is None:
                    return None
                cur = r
        return cur

    return walk(name.split("/")[:-1], links[name])


def _rel_tree(root: str, prefix: str) -> dict[str, bool]:
    """{archive name: is_dir} for everything under the live ``root`` (not following symlinks, not
    descending into staging directories)."""
    out: dict[str, bool] = {}
    try:
        st = os.lstat(root)
    except (FileNotFoundError, NotADirectoryError):
        return out
    out[prefix] = stat.S_ISDIR(st.st_mode)
    if not out[prefix]:
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        base = prefix if rel == "." else f"{prefix}/{rel}"
        dirnames[:] = [d for d in dirnames if not d.startswith(STAGING_PREFIX)]
        for d in dirnames:
            out[f"{base}/{d}"] = True
        for f in filenames:
            out[f"{base}/{f}"] = False
    return out


def _sha256_file(path: str) -> str | None:
    h = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        while b := os.read(fd, 1 << 20):
            h.update(b)
    finally:
        os.close(fd)
    return h.hexdigest()


class Extractor:
    """Checks every member of the selected paths while verify_archive reads the stream, and
    extracts it into its staging dir (or, with ``dry``, only compares it with the live data)."""

    def __init__(self, targets: list[Target], declared: set[str], dry: bool = False) -> None:
        self.by_name = {t.name: t for t in targets}
        self.declared = declared  # the names the archive's header lists
        self.dry = dry
        # this archive's members: name -> d (dir), f (file), h (hard link), l (symlink)
        self.seen: dict[str, str] = {}
        self.parents: set[str] = set()  # every directory some member of this archive lies below
        # the staged tree as every archive so far left it (a chain: purged, replaced), same kinds
        self.tree: dict[str, str] = {}
        self.kids: dict[str, set[str]] = {}  # directory of the tree -> its entries' names
        self.subdirs: dict[str, set[str]] = {}  # directory of the tree -> those entries that are directories
        # name -> created / replaced / None (unchanged): each name of the tree compared with the live data
        self.verdicts: dict[str, str | None] = {}
        self.archive = ""  # the archive being read (for messages)
        self.links: dict[str, str] = {}  # symlinks of the tree: name -> target (created last)
        self.delayed: list[tarfile.TarInfo] = []
        self.skipped: list[str] = []  # members below a .gofr-restore-* directory: never restored
        self.dirs: list[tuple[tarfile.TarInfo, str]] = []
        self.changes = {t.name: Change() for t in targets}
        self.live_exists = {t.name: os.path.lexists(t.dest) for t in targets}
        self._fds: dict[str, int] = {}  # staged directory -> open descriptor (LRU)
        # free space per staging dir, counted down as members are written: a member claiming more
        # than the disk has is refused before anything of it is written (writes still get ENOSPC)
        self.room: dict[str, int] = {}
        self.root = os.geteuid() == 0  # owners are restored (and compared) only as root
        self._live_dirs: dict[str, bool] = {}  # archive dir name -> its live path is a real directory
        self.plan: Superseded | None = None  # a chain: what need not be written (never in a dry run)
        self.index = 0  # the archive of the chain being read (0: the full)
        self.phantom: set[str] = set()  # names of the staged tree the plan did not write
        self.premade: set[str] = set()  # directories made before the first archive (see premake)
        # directory -> the GNU.dumpdir it was last purged with, while nothing was put into it or
        # dropped from it since: the same listing again would purge nothing and find every N entry
        # as before (most directories of a day's incremental), so it is neither decoded nor purged
        self.purged: dict[str, bytes] = {}

    # -- the checks ----------------------------------------------------------------------------
    def _check(self, m: tarfile.TarInfo, name: str, kind: str) -> None:
        parts = name.split("/")
        if name.startswith("/") or ".." in parts:
            raise Refused("absolute or '..'")
        why = member_limits_error(m)
        if why:
            raise Refused(why)
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise Refused(f"{name!r} is a device node, FIFO or other special file")
        if kind != "d" and name in self.parents:
            what = "symlink" if kind == "l" else "file"
            raise Refused(f"other members lie below it: they would be written through this {what}")
        parent = name.rpartition("/")[0]
        while parent and parent not in self.parents:  # a directory met for the first time
            k = self.seen.get(parent)
            earlier = k is None and parent in self.tree  # staged by an earlier archive of the chain
            k = self.tree.get(parent) if earlier else k
            where = "an earlier archive of its chain" if earlier else "this archive"
            if k == "l":
                raise Refused(f"it would be written through the symlink {parent!r} (of {where})")
            if k is not None and k != "d":
                raise Refused(f"{parent!r} is a file in {where}, not a directory")
            self.parents.add(parent)
            parent = parent.rpartition("/")[0]
        if m.islnk():
            target = m.linkname.rstrip("/")
            if (
                target.split("/", 1)[0] != parts[0]
                or os.path.normpath(target) != target
                or self.seen.get(target) not in ("f", "h")
            ):
                raise Refused(
                    f"hard link to {m.linkname!r}, which is not a file restored before it in the same "
                    "path (and the same archive)"
                )

    def __call__(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        top = m.name.split("/", 1)[0]
        if top not in self.declared:
            raise StopVerify(f"member {m.name!r} does not belong to any path the archive declares")
        if top not in self.by_name:  # not selected (--only): read past it, hashing it, checking its size
            if m.isreg():
                read_member(tar, m)
            return
        name = m.name.rstrip("/")
        if name in self.seen or os.path.normpath(name) != name:
            raise StopVerify(f"member {m.name!r} is duplicated or not in normal form")
        if f"/{STAGING_PREFIX}" in f"/{name}":  # a restore's staging, caught by a backup: not data
            self.skipped.append(name)
            if m.isreg():
                read_member(tar, m)
            return
        kind = _kind(m)
        try:
            self._check(m, name, kind)
        except Refused as e:
            raise StopVerify(f"refusing member {m.name!r}: {e}") from None
        t = self.by_name[top]
        try:
            raw = dumpdir.of_member(m) if kind == "d" else None
            same = raw is not None and self.tree.get(name) == "d" and self.purged.get(name) == raw
            listing = None if same else self._listing(raw)
            skip = (
                self.plan is not None
                and (m.isreg() or m.islnk())
                and "/" in name
                and self.plan.skip(self.index, name)
            )
            self._put(t, name, kind, skip)
            if listing is not None and raw is not None:
                self._purge(t, name, listing)
                self.purged[name] = raw
        except Refused as e:
            raise StopVerify(f"refusing member {m.name!r}: {e}") from None
        self.seen[name] = kind
        verdict = self._compare(t, name, m) if self.live_exists[top] else "created"
        hasher = hashlib.sha256() if verdict == "content" else None
        try:  # an OSError here is a read of the archive (its stream, its disk); writes raise LocalFault
            if m.isreg() and not skip:
                self._room(t, m)
            if skip:  # gone by the end of the chain: read, hashed and checked, not written
                self.phantom.add(name)
                if m.isreg():
                    read_member(tar, m, hasher=hasher)
            elif self.dry:
                if m.isreg():
                    read_member(tar, m, hasher=hasher)
                elif m.issym():
                    self.links[name] = m.linkname
            else:
                self._extract(tar, t, name, m, hasher)
        except OSError as e:
            raise StopVerify(f"cannot extract {m.name!r}: {e}") from None
        if hasher is not None:
            verdict = None if _sha256_file(t.live(name)) == hasher.hexdigest() else "replaced"
        self.verdicts[name] = verdict

    # -- a chain: the staged tree across archives --------------------------------------------------
    def premake(self) -> None:
        """Make every directory of the restored tree (the plan's: the last archive's directory
        members) before the full's pass writes into them. On ext4, files written into
        directories made one after another beforehand are several times faster to create (in
        kernel time) than files written into each directory just after it is made, which is the
        order of a chained archive (a directory, then its files): measured with GNU tar, 12.7 s
        against 30 to 40 s for the same 84,000 files. The staged tree does not hold them until a
        member does: a file, link or symlink member where one of them is (unless the plan does
        not write that member: a later archive stores the directory there), or one of them left
        over at the end, starts the pass again without them (:class:`Rewind`)."""
        assert self.plan is not None
        for name in self.plan.dirs:
            parts = name.split("/")
            t = self.by_name.get(parts[0])
            if t is None or os.path.normpath(name) != name or ".." in parts or name.startswith("/"):
                continue
            if any(p.startswith(STAGING_PREFIX) for p in parts):
                continue
            try:
                os.makedirs(f"{t.base}/{name}", mode=0o700, exist_ok=True)
            except OSError:  # only an optimisation: the pass makes what it needs, and says why it cannot
                return
            self.premade.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))

    def leftover_premade(self) -> str | None:
        """A directory :meth:`premake` made that the staged tree does not hold at the end."""
        for name in sorted(self.premade):
            t = self.by_name[name.split("/", 1)[0]]
            if self.tree.get(name) != "d" and os.path.lexists(f"{t.base}/{name}"):
                return name
        return None

    def next_archive(self, archive: str, declared: set[str]) -> None:
        """Start the next archive of a chain (``declared``: the names its header lists). The rules
        that hold within one archive start again; a selected name this archive's header does not
        list is gone from the result (each header is authoritative for the configured names)."""
        self.close()  # no descriptor outlives an archive: a later one may replace the directory
        self.archive = archive
        self.index += 1
        self.declared = declared
        self.seen = {}
        self.parents = set()
        self.delayed = []
        self.dirs = []
        for name, t in self.by_name.items():
            if name not in declared and name in self.tree:
                self._drop(t, name)

    def _listing(self, raw: bytes | None) -> dumpdir.Listing | None:
        """A directory member's GNU.dumpdir (``raw``), parsed, or None."""
        if raw is None:
            return None
        try:
            return dumpdir.parse(raw)
        except ValueError as e:
            raise Refused(f"its {dumpdir.KEYWORD} is malformed: {e}") from None

    def _put(self, t: Target, name: str, kind: str, skip: bool = False) -> None:
        """``name`` now holds a member of ``kind``: whatever an earlier archive staged there goes
        first, unless both are directories (then the directory stays, and its listing purges it)."""
        old = self.tree.get(name)
        # a member the plan does not write (``skip``) leaves the directory made there as it is
        if kind != "d" and name in self.premade and not skip:
            raise Rewind(f"{name} is a {kind} member where a directory was made before the pass")
        if old is not None and (old != "d" or kind != "d"):
            self._drop(t, name)
        self.tree[name] = kind
        parent, _, leaf = name.rpartition("/")
        if parent:
            self.kids.setdefault(parent, set()).add(leaf)
            if kind == "d":
                self.subdirs.setdefault(parent, set()).add(leaf)
            if old is None or (old == "d") != (kind == "d"):  # what a purge of the parent looks at
                self.purged.pop(parent, None)
        if kind == "d":
            self.kids.setdefault(name, set())

    def _purge(self, t: Target, name: str, listing: dumpdir.Listing) -> None:
        """GNU tar's purge of an existing directory (``try_purge_directory``): every staged entry
        the listing does not name, ``Y`` and ``N`` entries that are directories and ``D`` entries
        that are not; then every ``N`` entry must be a non-directory staged by an earlier archive.
        In set operations: a directory of a day's incremental lists every entry it has."""
        kids = self.kids.get(name, set())
        subdirs = self.subdirs.get(name, set())
        names, dirs = listing.names, listing.dirs
        # what it does not name; a file entry that is a directory; a D entry that is not
        drop = (kids - names) | {s for s in subdirs if s in names and s not in dirs}
        drop |= {s for s in dirs if s in kids and s not in subdirs}
        for leaf in sorted(drop):
            self._drop(t, f"{name}/{leaf}")
        # N entries not staged as non-directories: only the names it lists that are not staged
        # (today's new Y files) or that are staged directories can be one
        odd = (names - kids) | (names & subdirs)
        bad = odd - listing.stored - dirs
        bad = {leaf for leaf in bad if not leaf.startswith(STAGING_PREFIX)}
        if bad:
            leaf = min(bad, key=os.fsencode)  # the first of them in the listing
            raise Refused(
                f"it lists {leaf!r} as unchanged since the archive before it, but no earlier archive "
                "of its chain restored it"
                + (" as a file" if leaf in subdirs else "")
                + ": the chain is incomplete"
            )

    def _drop(self, t: Target, name: str) -> None:
        """Remove ``name`` (and all below it) from the staged tree, never following a link (its
        parents are real staged directories: see _check)."""
        kind = self.tree.get(name)
        written = name not in self.phantom  # not written by the plan: nothing (of its own) to remove
        stack = [name]
        while stack:
            n = stack.pop()
            self.tree.pop(n, None)
            self.verdicts.pop(n, None)
            self.links.pop(n, None)
            self.purged.pop(n, None)
            self.subdirs.pop(n, None)
            self.phantom.discard(n)
            stack.extend(f"{n}/{leaf}" for leaf in self.kids.pop(n, ()))
        parent, _, leaf = name.rpartition("/")
        if parent in self.kids:
            self.kids[parent].discard(leaf)
        if parent in self.subdirs:
            self.subdirs[parent].discard(leaf)
        self.purged.pop(parent, None)
        if self.dry or kind is None or not written:
            return
        key = f"{t.name}\0{name}"  # as _dirfd names its descriptors
        for k in [k for k in self._fds if k == key or k.startswith(key + "/")]:
            os.close(self._fds.pop(k))
        path = f"{t.base}/{name}"
        with self._writing(t, name):
            if kind == "d":
                shutil.rmtree(path)  # fd-based on Linux: never follows a symlink
            else:
                with contextlib.suppress(FileNotFoundError):  # a symlink of this archive: not made yet
                    os.unlink(path)

    def _room(self, t: Target, m: tarfile.TarInfo) -> None:
        if m.size <= 0:
            return
        room = self.room.get(t.name, 0)
        if m.size > room:  # statvfs only when the estimate runs out
            where = t.parent if self.dry else t.base
            with self._writing(t, m.name):
                room = free_bytes(where)
            if m.size > room:  # too little room to find out whether the claim is true: not a verdict
                raise LocalFault(
                    f"member {m.name!r} claims {m.size} bytes, more than the {room} free "
                    f"where it would be staged ({t.parent})",
                    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
                )
        self.room[t.name] = room - m.size

    def _compare(self, t: Target, name: str, m: tarfile.TarInfo) -> str | None:
        """created, replaced, None (unchanged) or content (a regular file whose type, size, mtime,
        mode and owner match: its content decides)."""
        parent = name.rpartition("/")[0]
        if parent and not self._live_dir(t, parent):  # e.g. a symlink now where a directory was
            return "created"
        live = t.live(name)
        try:
            st = os.lstat(live)
        except (FileNotFoundError, NotADirectoryError):
            return "created"
        same_owner = not self.root or (st.st_uid, st.st_gid) == (m.uid, m.gid)
        mode_ok = stat.S_IMODE(st.st_mode) == restored_mode(m)
        if m.isdir():
            same = stat.S_ISDIR(st.st_mode) and mode_ok and same_owner
        elif m.issym():
            same = stat.S_ISLNK(st.st_mode) and os.readlink(live) == m.linkname and same_owner
        elif m.islnk():
            try:
                st2 = os.lstat(t.live(m.linkname.rstrip("/")))
            except OSError:
                return "replaced"
            same = stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == (st2.st_dev, st2.st_ino)
        else:
            same = (
                stat.S_ISREG(st.st_mode)
                and st.st_size == m.size
                and int(st.st_mtime) == int(m.mtime)
                and mode_ok
                and same_owner
            )
            return "content" if same else "replaced"
        return None if same else "replaced"

    def _live_dir(self, t: Target, name: str) -> bool:
        """The live path of the archive directory ``name`` is a real directory, reached without
        following a link (so comparing never reads through one). Cached: one lstat per directory."""
        ok = self._live_dirs.get(name)
        if ok is None:
            parent = name.rpartition("/")[0]
            try:
                real_dir = stat.S_ISDIR(os.lstat(t.live(name)).st_mode)
            except OSError:
                real_dir = False
            ok = real_dir and (not parent or self._live_dir(t, parent))
            self._live_dirs[name] = ok
        return ok

    # -- writing the staging -------------------------------------------------------------------
    @contextlib.contextmanager
    def _writing(self, t: Target, name: str) -> Iterator[None]:
        """A write into the staging (every member was checked before it is written: what fails
        here is the disk, its inodes, its quota, its permissions): a LocalFault, never a verdict
        on the archive."""
        try:
            yield
        except OSError as e:
            raise LocalFault(f"cannot write {name!r} in {t.parent}: {e.strerror or e}", e) from None

    def _extract(self, tar: tarfile.TarFile, t: Target, name: str, m: tarfile.TarInfo, hasher: Any) -> None:
        dest = f"{t.base}/{name}"
        if m.issym():  # created after every other member: see finish()
            self.links[name] = m.linkname
            self.delayed.append(copy.copy(m))
            return
        with self._writing(t, name):
            if m.isdir():
                os.makedirs(dest, mode=0o700, exist_ok=True)
                self.dirs.append((m, dest))
                return
            if not m.isreg():  # a hard link, checked in _check; no symlink exists in the staging yet
                if m.linkname.rstrip("/") in self.phantom:
                    raise Rewind(f"{name} is a hard link to {m.linkname}, which was not written")
                os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
                os.link(f"{t.base}/{m.linkname.rstrip('/')}", dest, follow_symlinks=False)
                return
            parent, _, base = name.rpartition("/")
            fd = os.open(
                base,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=self._dirfd(t, parent),
            )
        try:
            read_member(tar, m, fd, hasher)  # reads the archive (OSError), writes fd (LocalFault)
            with self._writing(t, name):
                self._attrs(fd, m)
        finally:
            os.close(fd)

    def _dirfd(self, t: Target, rel: str) -> int:
        """A descriptor of the staged directory ``rel`` (created if needed), from a small LRU:
        opening relative to it is about twice as fast as by absolute path, and members arrive
        grouped by directory."""
        key = f"{t.name}\0{rel}"
        fd = self._fds.pop(key, None)
        if fd is None:
            d = t.base / rel
            os.makedirs(d, mode=0o700, exist_ok=True)
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            if len(self._fds) >= 32:
                os.close(self._fds.pop(next(iter(self._fds))))
        self._fds[key] = fd  # most recently used last
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def finish(self) -> None:
        """After the whole archive verified: the delayed symlinks, each in a parent reached
        without following any link, then the directories' attributes, deepest first, so that
        setting a parent's mtime is the last thing that touches it (GNU tar's order)."""
        for m in self.delayed:
            name = m.name.rstrip("/")
            if self.tree.get(name) != "l":  # purged by a directory listing after it
                continue
            t = self.by_name[name.split("/", 1)[0]]
            parent, _, base = name.rpartition("/")
            try:
                fd = open_dir_nofollow(t.base, parent, create=True)
                try:
                    os.symlink(m.linkname, base, dir_fd=fd)
                    if self.root:
                        os.chown(base, m.uid, m.gid, dir_fd=fd, follow_symlinks=False)
                    os.utime(base, (m.mtime, m.mtime), dir_fd=fd, follow_symlinks=False)
                finally:
                    os.close(fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST):  # something in the way
                    raise Refused(f"cannot create the symlink {name!r}: {e.strerror}") from None
                raise LocalFault(f"cannot write {name!r} in {t.parent}: {e.strerror or e}", e) from None
        for ti, path in sorted(self.dirs, key=lambda x: x[1].count("/"), reverse=True):
            if self.tree.get(ti.name.rstrip("/")) != "d":  # purged by a directory listing after it
                continue
            t = self.by_name[ti.name.rstrip("/").split("/", 1)[0]]
            with self._writing(t, ti.name.rstrip("/")):
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    self._attrs(fd, ti)
                finally:
                    os.close(fd)

    def _attrs(self, fd: int, m: tarfile.TarInfo) -> None:
        """Owner (as root), mode (:func:`restored_mode`), mtime: through the descriptor (the
        owner first: chown clears setgid)."""
        if self.root:
            os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, restored_mode(m))
        os.utime(fd, (m.mtime, m.mtime))

    # -- after the pass: what the links do, and the full change list ----------------------------
    def blocked(self, name: str, inclusive: bool = False) -> str | None:
        """Why the restore could not write at archive name ``name`` without going through a link
        or a file of this archive (None: every parent of it is a real directory here; with
        ``inclusive``, ``name`` itself too)."""
        parent = name if inclusive else name.rpartition("/")[0]
        while parent:
            k = self.tree.get(parent)
            if k == "l":
                where = resolve_link(self.links, parent)
                leads = "outside the archive" if where is None else "/".join(where)
                return f"the archive holds a symlink at {parent!r} (leading to {leads})"
            if k is not None and k != "d":
                return f"the archive holds a file at {parent!r}"
            parent = parent.rpartition("/")[0]
        return None

    def outside_links(self, t: Target) -> list[str]:
        """Links of ``t`` that lead outside its path once every link exists (data: restored as
        they are, and reported)."""
        out = []
        for name, target in self.links.items():
            if name.split("/", 1)[0] != t.name:
                continue
            where = resolve_link(self.links, name)
            if not where or where[0] != t.name:
                out.append(f"{name} -> {target}")
        return sorted(out)

    def finish_changes(self, t: Target) -> Change:
        c = self.changes[t.name]
        for name, verdict in self.verdicts.items():
            if name == t.name or name.startswith(t.name + "/"):
                if verdict == "created":
                    c.created.append(name)
                elif verdict == "replaced":
                    c.replaced.append(name)
                else:
                    c.unchanged += 1
        live = _rel_tree(str(t.dest), t.name) if self.live_exists[t.name] else {}
        gone = topmost([p for p in live if p not in self.tree])
        if t.keep_all:
            t.keep = sorted(set(t.keep) | set(gone))
        keep = topmost([k for k in t.keep if k in live])
        t.keep = keep
        c.kept = keep
        if keep:
            c.created = [n for n in c.created if not _under(n, keep)]
            c.replaced = [n for n in c.replaced if not _under(n, keep)]
        c.removed = sorted(p for p in live if p not in self.tree and not _under(p, keep))
        c.outside = self.outside_links(t)
        return c
