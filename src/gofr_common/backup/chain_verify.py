"""``verify --chain``: is a restore point's chain complete and intact (issue 17)?

A restore point (an archive of a chain) is restorable only when every archive from its chain's
full to it is there and sound, and each is the very archive the next one was made over. Two
records say what those links are, and both are untrusted: the manifest's ``kind``/``parent``/
``full`` (a manifest can be rebuilt, edited, or restored from elsewhere) and each archive's own
header (``kind`` and ``chain: {"full", "parent"}``, written when the archive was). Here:

1. the chain is followed in the manifest (chain.chain_of); a missing, replaced, looping or
   malformed link breaks it, and so does an archive whose file is not on disk. Earlier
   verification failures are not taken on trust here: every archive reached is read again, and
   the chain is followed past one that failed before (or is not on disk) so that all of it is
   checked;
2. every archive of it is verified as ``verify`` does (checksum, the whole stream, member count,
   the BLAKE3 index) and the result recorded in the manifest by the caller's ``verify_one``;
3. each archive's header must agree with its manifest entry (``kind``, ``parent``, ``full``)
   and with what was actually read: the parent it names (file name and sha256) must be the
   archive before it in the chain as hashed in step 2, and the full it names the chain's head.

Any disagreement is a broken link, named: the first one, from the full onwards, is the verdict.

``snapshot_note``: a chained archive's end marker records the ``records_sha256`` of the
``.snap`` written beside it; a ``.snap`` there that is damaged, names another archive, or whose
records differ is not this archive's. That is a warning, never an archive failure: the ``.snap``
only spares the next run a full, and the next run (``base_or_full``) refuses such a one itself.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import layout
from .chain import KIND_FULL, KIND_INCREMENTAL, chain_of, kind_of
from .incremental import SnapshotError, load_snapshot, snapshot_path
from .manifest import Entry
from .verify import VerifyResult

_LEN = struct.Struct("<II")


def _link(v: Any) -> dict[str, str] | None:
    if isinstance(v, dict) and all(isinstance(v.get(k), str) and v.get(k) for k in ("filename", "sha256")):
        return {"filename": layout.plain_name(v["filename"]), "sha256": v["sha256"]}
    return None


def _short(link: dict[str, str] | None) -> str:
    return "nothing" if link is None else f"{link['filename']} (sha256 {link['sha256'][:16]})"


@dataclass
class ChainReport:
    """The verdict on one restore point: ``archives`` one row per archive of its chain, full
    first; ``broken`` the first broken link (None: the chain is complete and intact);
    ``checked`` False when an archive could not be read (nothing concluded about it)."""

    point: str
    archives: list[dict[str, Any]] = field(default_factory=list)
    broken: str | None = None
    checked: bool = True

    @property
    def ok(self) -> bool:
        return self.broken is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "ok": self.ok,
            "checked": self.checked,
            "broken": self.broken,
            "archives": self.archives,
        }


def _actual(e: Entry, r: VerifyResult | None) -> set[str]:
    """The checksums the archive ``e`` may rightly be linked by: what was read now, and for a
    sealed one the plain archive's (checked against it when it was decrypted)."""
    out = set()
    if r is not None and r.sha256 and r.checked and r.archive_intact:
        out.add(r.sha256)
    sealed_plain = e.get("plain_sha256") if layout.is_sealed(str(e.get("filename"))) else None
    if r is not None and r.checked and r.archive_intact and isinstance(sealed_plain, str):
        out.add(sealed_plain)
    return out


def header_problem(
    e: Entry, meta: dict[str, Any] | None, prev: tuple[Entry, VerifyResult | None] | None, head: Entry | None
) -> str | None:
    """Where archive ``e``'s own header disagrees with its manifest entry, or with the archive
    before it in the chain (``prev``, with what reading it found) and the chain's head."""
    name = str(e.get("filename"))
    if meta is None:
        return None  # not read (a sealed archive without its identity): nothing to compare
    hkind = meta.get("kind", KIND_FULL)
    if hkind not in (KIND_FULL, KIND_INCREMENTAL):
        return f"{name}'s header has an unknown kind {str(hkind)[:40]!r}"
    if hkind != kind_of(e):
        return f"{name}'s header says it is {'an' if hkind == KIND_INCREMENTAL else 'a'} {hkind}, the manifest says {kind_of(e)}"
    hc = meta.get("chain")
    if hkind == KIND_FULL:
        return None if hc is None else f"{name}'s header is a full's but names a chain"
    hp = _link(hc.get("parent")) if isinstance(hc, dict) else None
    hf = _link(hc.get("full")) if isinstance(hc, dict) else None
    if hp is None or hf is None:
        return f"{name}'s header has no readable chain record (parent and full)"
    mp, mf = _link(e.get("parent")), _link(e.get("full"))
    if hp != mp:
        return f"{name}'s header names its parent {_short(hp)}, the manifest says {_short(mp)}"
    if hf != mf:
        return f"{name}'s header names its full {_short(hf)}, the manifest says {_short(mf)}"
    if prev is not None:
        pe, pr = prev
        seen = _actual(pe, pr)
        if hp["filename"] != layout.plain_name(str(pe.get("filename"))):
            return f"{name} was made over {hp['filename']}, but the archive before it is {pe.get('filename')}"
        if seen and hp["sha256"] not in seen:
            return (
                f"{pe.get('filename')} (the parent of {name}) is not the archive {name} was made over: "
                f"it has sha256 {sorted(seen)[0][:16]}, {name}'s header says {hp['sha256'][:16]}"
            )
    if head is not None and hf["filename"] != layout.plain_name(str(head.get("filename"))):
        return (
            f"{name}'s header names the full {hf['filename']}, but its chain starts at {head.get('filename')}"
        )
    return None


def _unfailed(entries: Iterable[Entry]) -> list[Entry]:
    """The entries with earlier verification verdicts left out: the chain is followed by its
    links only, and every archive on it is read again here."""
    return [{**e, "verified": None} for e in entries]


def verify_chain(
    entries: list[Entry],
    point: Entry,
    lay: layout.BackupLayout,
    verify_one: Callable[[Path], VerifyResult],
    reload: Callable[[], list[Entry]] | None = None,
    snapshots: bool = True,
) -> ChainReport:
    """Check restore point ``point``'s chain (see the module's doc). ``verify_one`` verifies (and
    records) one archive; ``reload`` re-reads the manifest after that (so that the verdict
    uses what the verification found); ``snapshots``: also check each ``.snap`` (snapshot_note)."""
    rep = ChainReport(str(point.get("filename")))
    # followed in the manifest alone (no layout): a file missing from disk is a row of its own,
    # and the chain is still followed past it, so that every archive of it is checked
    c = chain_of(_unfailed(entries), point)
    results: dict[str, VerifyResult | None] = {}
    for a in c.archives:
        p = lay.archive(str(a.get("path")))
        results[str(a.get("path"))] = verify_one(p) if p.is_file() else None
    problems: list[str] = []
    # where the manifest's own break lies: before the first archive reached (a missing, replaced
    # or malformed parent, a loop), unless the walk reached a full: then it is the point's record
    # of its full, which comes after every archive's own state
    last = bool(c.archives) and kind_of(c.archives[0]) == KIND_FULL
    if c.broken and not last:
        problems.append(c.broken)
    prev: tuple[Entry, VerifyResult | None] | None = None
    head = c.archives[0] if c.archives and kind_of(c.archives[0]) == KIND_FULL else None
    for i, a in enumerate(c.archives):
        r = results[str(a.get("path"))]
        row: dict[str, Any] = {
            "filename": a.get("filename"),
            "path": str(lay.archive(str(a.get("path")))),
            "kind": kind_of(a),
            "parent": (_link(a.get("parent")) or {}).get("filename"),
        }
        if r is None:
            row.update(ok=False, checked=True, error="not on disk", link_error=None)
            rep.archives.append(row)
            problems.append(f"{a.get('filename')} is not on disk")
            prev = None
            continue
        link_error = header_problem(a, r.meta, prev if i > 0 else None, head)
        row.update(
            ok=r.ok and link_error is None,
            checked=r.checked,
            error=r.error,
            link_error=link_error,
            sha256=r.sha256,
            file_count=r.file_count,
            checksum_only=r.checksum_only,
            checksum_note=r.note,
            snapshot_warning=snapshot_note(lay.archive(str(a.get("path"))), r) if snapshots else None,
        )
        rep.archives.append(row)
        if not r.checked:
            rep.checked = False
            problems.append(f"{a.get('filename')} could not be checked: {r.error}")
        elif not r.ok:
            problems.append(f"{a.get('filename')} failed verification: {r.error}")
        if link_error:
            problems.append(link_error)
        prev = (a, r)
    if c.broken and last:
        problems.append(c.broken)
    if reload is not None and not problems:
        again = chain_of(reload(), point, lay)  # what the manifest now says, verdicts included
        if again.broken:
            problems.append(again.broken)
    if problems:
        rep.broken = problems[0]
    return rep


def _records_sha256(entries: dict[str, bytes]) -> str:
    """The digest of a snapshot's records, as its writer computed it (walk order is kept)."""
    h = hashlib.sha256()
    for name, rec in entries.items():
        raw = os.fsencode(name)
        h.update(_LEN.pack(len(raw), len(rec)) + raw + rec)
    return h.hexdigest()


def snapshot_note(archive: Path, r: VerifyResult) -> str | None:
    """A warning when the ``.snap`` beside a chained archive is not this archive's (None: it is,
    or there is none, or the archive is not chained or not sound). Never an archive failure."""
    end = r.end
    if not r.ok or not r.sha256 or not isinstance(end, dict) or layout.is_sealed(archive.name):
        return None
    snap = end.get("snapshot")
    if not isinstance(snap, dict) or not isinstance(snap.get("records_sha256"), str):
        return None
    path = snapshot_path(archive)
    if not path.exists():
        return None  # a lost .snap costs a full, and is nobody's fault
    try:
        s = load_snapshot(archive, r.sha256)
    except SnapshotError as e:  # the next run refuses it too (base_or_full), and writes a full
        why = str(e).removesuffix(": the next archive must be a full")
        return f"the {path.name} beside it is not this archive's ({why}): the next run writes a full"
    except MemoryError:
        return None
    if _records_sha256(s.entries) != snap["records_sha256"]:
        # it names this archive and its checksum, so the next run would trust it: say so
        return (
            f"the {path.name} beside it is not this archive's: its records differ from the "
            "archive's own record of them; remove it (the next run then writes a full), or the "
            "next incremental is made over a tree this archive does not hold"
        )
    return None
