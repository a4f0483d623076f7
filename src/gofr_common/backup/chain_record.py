"""What verification passes over a chain of archives saw (issue 17), for the checks that compare
something with a chain's **final tree**: the restore drill (a restored copy, drill.py) and the
source spot check (the live source, spot_check.py).

A chain's final tree is not what its last archive holds (an incremental stores one day's changes):
its names are the last archive's ``GNU.dumpdir`` listings (every directory of the tree has a
member there, listing ``D`` subdirectories and ``Y``/``N`` other entries) and its configured paths;
each entry's content is that of the newest archive of the chain that stored it.

:class:`ChainRecord` is fed by the passes (``verify.Capture``'s ``member`` and ``done`` hooks, one
pass per archive, full first) and keeps, in a SQLite file, so that memory does not grow with the
tree:

* ``f``: every path with the newest archive (pass) that stored it, that member's type (``f``
  regular, ``h`` hard link, ``l`` symlink, ``d`` directory, ``o`` other), size and mtime, and its
  BLAKE3 from that archive's index (regular files and hard links);
* ``d``: the last archive's directories and their ``GNU.dumpdir`` listings (earlier passes' are
  dropped as each pass ends);
* ``t`` (after :meth:`ChainRecord.final_tree`): every name of the final tree and its tag.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from . import dumpdir
from .archive_format import read_index
from .verify import Capture

_FLUSH = 4096  # members buffered before they are written to the record
TOP = "T"  # the tag of a configured path in the final tree (it has no listing above it)


def raw(name: str) -> bytes:
    """A member's or an index line's name as the bytes on disk (tarfile decodes with surrogateescape)."""
    return name.encode("utf-8", "surrogateescape")


class ChainRecord:
    """See the module's docstring. ``where``: the directory of its SQLite file (None: the temp dir)."""

    def __init__(self, where: Path | None, cap: Capture) -> None:
        fd, name = tempfile.mkstemp(dir=where, prefix=".gofr-chain-record-", suffix=".db")
        os.close(fd)
        self.path = Path(name)
        self.db = sqlite3.connect(name, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute(
            "CREATE TABLE f (name BLOB PRIMARY KEY, pass INT, kind TEXT, size INT, mtime INT, digest TEXT)"
        )
        self.db.execute("CREATE TABLE d (name BLOB PRIMARY KEY, pass INT, listing BLOB)")
        self.cap = cap
        cap.member, cap.done, cap.restart = self.member, self.done, self.restart
        self.passes = 0
        self.archives: list[str] = []
        self.ends: list[dict[str, Any]] = []  # each pass's end marker
        self.incomplete = False
        self._f: list[tuple[bytes, int, str, int, int]] = []
        self._d: list[tuple[bytes, int, bytes]] = []

    def restart(self) -> None:
        """The restore's passes start again from the full (extract.Rewind): forget every pass."""
        self._f.clear()
        self._d.clear()
        self.db.execute("DELETE FROM f")
        self.db.execute("DELETE FROM d")
        self.db.execute("DROP TABLE IF EXISTS t")
        self.passes = 0
        self.archives = []
        self.ends = []
        self.incomplete = False

    def member(self, m: tarfile.TarInfo) -> None:
        name = raw(m.name.rstrip("/"))
        kind = "f" if m.isreg() else "h" if m.islnk() else "d" if m.isdir() else "l" if m.issym() else "o"
        self._f.append((name, self.passes, kind, m.size if kind == "f" else 0, int(m.mtime)))
        if kind == "d":
            listing = dumpdir.of_member(m)
            if listing is not None:
                self._d.append((name, self.passes, listing))
        if len(self._f) >= _FLUSH:
            self.flush()

    def flush(self) -> None:
        if not self._f and not self._d:
            return
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO f VALUES (?, ?, ?, ?, ?, NULL)", self._f)
        self.db.executemany("INSERT OR REPLACE INTO d VALUES (?, ?, ?)", self._d)
        self.db.execute("COMMIT")
        self._f.clear()
        self._d.clear()

    def done(self, vr: Any) -> None:
        """One archive read to its end: its index's digests go to the paths it stored."""
        self.flush()
        if self.cap.has_index and self.cap.index is not None:
            self.db.execute("BEGIN")
            try:
                for name, digest in read_index(self.cap.index):
                    self.db.execute(
                        "UPDATE f SET digest = ? WHERE name = ? AND pass = ?",
                        (digest, raw(name), self.passes),
                    )
            except ValueError:
                pass  # a damaged index: the pass itself fails on it (verify compares it)
            self.db.execute("COMMIT")
        self.db.execute("DELETE FROM d WHERE pass < ?", (self.passes,))
        end = vr.end or {}
        self.ends.append(end)
        self.incomplete |= end.get("complete") is False or bool(end.get("unreadable"))
        self.archives.append(vr.path.name)
        self.passes += 1

    def row(self, name: bytes) -> tuple[str, int, str | None] | None:
        """(kind, size, digest) of the newest member stored at ``name``, or None."""
        r = self.db.execute("SELECT kind, size, digest FROM f WHERE name = ?", (name,)).fetchone()
        return None if r is None else (r[0], r[1], r[2])

    def listed(self, name: bytes) -> bool:
        """Whether the last archive has a directory member (with a listing) at ``name``."""
        return self.db.execute("SELECT 1 FROM d WHERE name = ?", (name,)).fetchone() is not None

    def dirs(self) -> Iterator[tuple[bytes, bytes]]:
        yield from self.db.execute("SELECT name, listing FROM d ORDER BY name")

    def final_tree(self, tops: Iterable[str]) -> None:
        """Gather the final tree's names (table ``t``): the configured paths ``tops``, and every
        entry of the last archive's listings. Raises ValueError on a malformed listing."""
        self.flush()
        self.db.execute("DROP TABLE IF EXISTS t")
        self.db.execute("CREATE TABLE t (name BLOB PRIMARY KEY, tag TEXT)")
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO t VALUES (?, ?)", [(raw(x), TOP) for x in tops])
        rows: list[tuple[bytes, str]] = []
        for rel, listing in self.dirs():
            rows.extend((rel + b"/" + name, tag) for tag, name in dumpdir.decode(listing))
            if len(rows) >= _FLUSH:
                self.db.executemany("INSERT OR REPLACE INTO t VALUES (?, ?)", rows)
                rows.clear()
        self.db.executemany("INSERT OR REPLACE INTO t VALUES (?, ?)", rows)
        self.db.execute("COMMIT")

    def final(self, name: bytes) -> tuple[str, tuple[str, int, int, str | None, int] | None] | None:
        """(after :meth:`final_tree`) None when ``name`` is not in the final tree; else its tag
        (``D``/``Y``/``N``, or ``T`` for a configured path) and the newest member stored at it:
        (kind, size, mtime, digest, pass), or None when no archive of the chain stored it."""
        r = self.db.execute(
            "SELECT t.tag, f.kind, f.size, f.mtime, f.digest, f.pass FROM t LEFT JOIN f ON f.name = t.name "
            "WHERE t.name = ?",
            (name,),
        ).fetchone()
        if r is None:
            return None
        return r[0], (None if r[1] is None else (r[1], r[2], r[3], r[4], r[5]))

    def final_rows(self) -> Iterator[tuple[bytes, str, str | None, int, int]]:
        """(after :meth:`final_tree`) every name of the final tree: (name, tag, kind, size, mtime) of
        the newest member stored at it (kind None, size and mtime 0: no archive stored it)."""
        for name, tag, kind, size, mtime in self.db.execute(
            "SELECT t.name, t.tag, f.kind, f.size, f.mtime FROM t LEFT JOIN f ON f.name = t.name"
        ):
            yield name, tag, kind, size or 0, mtime or 0

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
