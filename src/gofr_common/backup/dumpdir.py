"""GNU tar's incremental "dumpdir", written into our POSIX/pax archives.

GNU tar 1.34, creating a ``--format=posix --listed-incremental`` archive, stores every directory as
an ordinary directory member (typeflag ``5``) whose pax extended header carries the keyword
``GNU.dumpdir``: the directory's entries at backup time, each a one-letter tag and the entry's name
(its bytes on disk), NUL-terminated, sorted by their bytes, and one more NUL at the end::

    Y<name>\\0   a non-directory stored in this archive
    N<name>\\0   a non-directory present at backup time but not stored in this archive (unchanged)
    D<name>\\0   a directory (always stored: every directory gets a member of its own)
    \\0          the end (an empty directory's dumpdir is this one byte)

``tar --listed-incremental=/dev/null -x`` reads it on each directory member that already exists
where it extracts, and first removes ("purges") every entry of that directory the list does not
name, and every listed ``Y`` entry that is a directory now, and every ``D`` entry that is not (both
after following symlinks); then the archive's members are extracted over what is left. Plain
``tar -x`` ignores the keyword; Python's tarfile keeps it in ``TarInfo.pax_headers``. GNU tar finds
an entry by binary search (strcmp), so the order must be the bytes' order: :func:`encode` sorts.

GNU tar's own ``R``/``T``/``X`` entries (directory renames) are not written here.

The pax header is packed here rather than by tarfile: tarfile would mark the whole header
``hdrcharset=BINARY`` as soon as one listed name is not UTF-8, and GNU tar 1.34 warns about that
keyword ("Ignoring unknown extended header keyword") on every such member.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass

from .tarstream import BLOCK, _split, ustar_header

KEYWORD = "GNU.dumpdir"
STORED = "Y"  # a non-directory whose member is in this archive
UNCHANGED = "N"  # a non-directory not in this archive: the extracted copy from before stays
DIRECTORY = "D"
TAGS = (STORED, UNCHANGED, DIRECTORY)
_TAGSET = set(TAGS)

_MAX7 = 0o7777777
_MAX11 = 0o77777777777
_PAX_NAME = "././@PaxHeader"  # what tarfile names its pax headers


def _raw(name: str | bytes) -> bytes:
    return name if isinstance(name, bytes) else os.fsencode(name)


def encode(entries: Iterable[tuple[str, str | bytes]]) -> bytes:
    """The dumpdir value of ``(tag, name)`` pairs: sorted by the names' bytes, each ``tag + name +
    NUL``, then a final NUL. Names are single path components (str as os.fsdecode gives them, or
    bytes). Raises ValueError on a bad tag, a bad name or a name listed twice."""
    seen: dict[bytes, str] = {}
    for tag, name in entries:
        raw = _raw(name)
        if tag not in TAGS:
            raise ValueError(f"dumpdir tag {tag!r} is not one of {TAGS}")
        if not raw or raw in (b".", b"..") or b"/" in raw or b"\0" in raw:
            raise ValueError(f"dumpdir entry {raw!r} is not a single file name")
        if raw in seen:
            raise ValueError(f"dumpdir entry {raw!r} listed twice")
        seen[raw] = tag
    return b"".join(seen[raw].encode() + raw + b"\0" for raw in sorted(seen)) + b"\0"


def decode(value: bytes) -> list[tuple[str, bytes]]:
    """The ``(tag, name)`` pairs of a dumpdir value as :func:`encode` writes it (Y/N/D only).
    Raises ValueError when it is malformed."""
    if not value.endswith(b"\0"):
        raise ValueError("dumpdir does not end with NUL")
    out: list[tuple[str, bytes]] = []
    body = value[:-1]
    if not body:
        return out
    if not body.endswith(b"\0"):
        raise ValueError("dumpdir's last entry is not NUL-terminated")
    for item in body[:-1].split(b"\0"):
        tag, raw = item[:1].decode("ascii", "replace"), item[1:]
        if tag not in TAGS or not raw or b"/" in raw:
            raise ValueError(f"malformed dumpdir entry {item[:100]!r}")
        out.append((tag, raw))
    if [raw for _, raw in out] != sorted({raw for _, raw in out}):
        raise ValueError("dumpdir entries are not sorted, or one is listed twice")
    return out


@dataclass(frozen=True)
class Listing:
    """A dumpdir as :func:`parse` reads it: entry names decoded as :func:`os.fsdecode` would
    (UTF-8, surrogateescape). A purge needs every name and the few ``Y`` and ``D`` ones; the
    ``N`` entries (most of a day's listing) are the rest."""

    names: set[str]  # every entry
    stored: set[str]  # Y
    dirs: set[str]  # D

    @property
    def files(self) -> set[str]:
        """The non-directories (``Y`` and ``N``)."""
        return self.names - self.dirs

    @property
    def unchanged(self) -> set[str]:
        """The ``N`` entries."""
        return self.names - self.stored - self.dirs


def _tagged(tags: str, tag: str, names: list[str]) -> set[str]:
    out: set[str] = set()
    i = tags.find(tag)
    while i >= 0:
        out.add(names[i])
        i = tags.find(tag, i + 1)
    return out


def parse(value: bytes) -> Listing:
    """:func:`decode`, for a restore that reads every directory's listing of every archive of a
    chain: the same checks and the same ValueError, in whole-buffer operations (one split, one
    pass for names and one for tags, a set), not one per entry and tag."""
    if not value.endswith(b"\0"):
        raise ValueError("dumpdir does not end with NUL")
    body = value[:-1]
    if not body:
        return Listing(set(), set(), set())
    if not body.endswith(b"\0"):
        raise ValueError("dumpdir's last entry is not NUL-terminated")
    if body.isascii():  # the common case: str order is the bytes' order
        items = body[:-1].decode("ascii").split("\0")
        names = [s[1:] for s in items]
        ordered: list[str] | list[bytes] = names
    else:
        ordered = [s[1:] for s in body[:-1].split(b"\0")]
        items = body[:-1].decode("utf-8", "surrogateescape").split("\0")
        names = [s[1:] for s in items]
    tags = "".join([s[:1] for s in items])
    every = set(names)
    if (
        b"/" in body
        or min(map(len, items)) < 2
        or not set(tags) <= _TAGSET
        or len(every) != len(names)
        or ordered != sorted(ordered)
    ):
        decode(value)  # names the first malformed entry
        raise ValueError("dumpdir entries are not sorted, or one is listed twice")
    return Listing(every, _tagged(tags, STORED, names), _tagged(tags, DIRECTORY, names))


def of_member(m: tarfile.TarInfo) -> bytes | None:
    """The dumpdir a member read by tarfile carries (its raw bytes), or None. tarfile decodes pax
    values as UTF-8 with its ``errors`` (surrogateescape by default), so encoding back is exact."""
    value = m.pax_headers.get(KEYWORD)
    return None if value is None else value.encode("utf-8", "surrogateescape")


def _record(keyword: bytes, value: bytes) -> bytes:
    """One pax record, ``"<len> <keyword>=<value>\\n"``, whose length counts its own digits."""
    body = b" " + keyword + b"=" + value + b"\n"
    n = len(body) + 1
    while len(b"%d" % n) + len(body) != n:
        n = len(b"%d" % n) + len(body)
    return b"%d" % n + body


def _encoded(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def dir_header(ti: tarfile.TarInfo, dumpdir: bytes) -> bytes:
    """The headers of the directory member ``ti`` carrying ``dumpdir`` (from :func:`encode`): a
    pax extended header (``GNU.dumpdir``, and ``path``/``uname``/``gname``/``uid``/``gid``/
    ``mtime`` when they do not fit ustar, as raw bytes), then the ustar header. A multiple of 512
    bytes; the member has no content."""
    if ti.type != tarfile.DIRTYPE:
        raise ValueError(f"{ti.name!r}: a dumpdir belongs on a directory member")
    if not dumpdir.endswith(b"\0"):
        raise ValueError("a dumpdir ends with NUL")
    d = tarfile.TarInfo(ti.name)
    d.type = tarfile.DIRTYPE
    d.mode, d.size = ti.mode, 0
    records = [_record(KEYWORD.encode(), dumpdir)]
    name = _encoded(ti.name.rstrip("/")) + b"/"
    if not name.isascii() or _split(name) is None:
        records.append(_record(b"path", name))
        d.name = name[:99].decode("ascii", "replace").replace("\ufffd", "_")  # as tarfile does
    for field in ("uname", "gname"):
        value = _encoded(getattr(ti, field))
        if len(value) > 32 or not value.isascii():
            records.append(_record(field.encode(), value))
        else:
            setattr(d, field, value.decode("ascii"))
    for field in ("uid", "gid"):
        value = getattr(ti, field)
        if 0 <= value <= _MAX7:
            setattr(d, field, value)
        else:
            records.append(_record(field.encode(), b"%d" % value))
    mtime = ti.mtime
    if isinstance(mtime, int) and 0 <= mtime <= _MAX11:
        d.mtime = mtime
    else:
        records.append(_record(b"mtime", b"%d" % mtime if isinstance(mtime, int) else b"%.9f" % mtime))
        d.mtime = min(max(int(mtime), 0), _MAX11)
    data = b"".join(records)
    x = tarfile.TarInfo(_PAX_NAME)
    x.type = tarfile.XHDTYPE
    x.mode, x.size, x.mtime = 0o644, len(data), d.mtime
    xh, dh = ustar_header(x), ustar_header(d)
    assert xh is not None and dh is not None  # every field was made to fit ustar above
    return xh + data + bytes(-len(data) % BLOCK) + dh
