"""Chains of archives, as the manifest records them (issue 17): which archives a restore point
needs, and whether they are all there and intact.

A **chain** is a full archive (``kind: "full"``) followed by incrementals (``kind:
"incremental"``), each naming its ``parent`` (the archive just before it) and the chain's ``full``
by filename and sha256. A **restore point** is one archive together with everything before it in
its chain: restoring it means extracting the full, then every incremental up to it, in order.
An archive without ``kind`` (written before chains existed, or in full mode) is a full.

Chained archives live in one tier (daily); a link names its parent by filename within that tier.
Everything here reads manifest entries only, which are untrusted input: a malformed ``parent`` or
``full`` field, a loop, or a link to an entry of another project makes the chain broken, never a
crash and never a wrong answer. Files on disk are checked only when a layout is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import layout
from .manifest import Entry, failed

KIND_FULL = "full"
KIND_INCREMENTAL = "incremental"


def kind_of(e: Mapping[str, Any]) -> str:
    """``incremental`` only when the entry says so; anything else (absent, legacy, a full) is a full."""
    return KIND_INCREMENTAL if e.get("kind") == KIND_INCREMENTAL else KIND_FULL


def link_of(e: Mapping[str, Any]) -> dict[str, str]:
    """How an archive is named from its children: ``{"filename", "sha256"}``."""
    return {"filename": str(e.get("filename")), "sha256": str(e.get("sha256"))}


def _link(v: Any) -> dict[str, str] | None:
    """A well-formed link record, or None."""
    if isinstance(v, dict) and all(isinstance(v.get(k), str) and v.get(k) for k in ("filename", "sha256")):
        return {"filename": v["filename"], "sha256": v["sha256"]}
    return None


@dataclass
class Chain:
    """The archives one restore point needs, full first and the point itself last, as far as the
    links could be followed. ``broken``: why they are not all there and intact (None: they are)."""

    archives: list[Entry] = field(default_factory=list)
    broken: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None

    @property
    def paths(self) -> list[str]:
        return [str(e.get("path")) for e in self.archives]


def chain_of(entries: Iterable[Entry], e: Entry, lay: layout.BackupLayout | None = None) -> Chain:
    """The chain of restore point ``e`` among ``entries`` (one project's manifest entries).

    Broken when a parent is missing from the manifest, has another checksum than its child
    records, failed verification, is not in the same project and tier, or (``lay`` given) is not
    on disk; or when a link record is malformed, loops, or the chain's ``full`` does not match the
    head it leads to. ``archives`` then holds what could be followed, the broken link last."""
    return chains_in(entries, lay)(e)


def chains_in(entries: Iterable[Entry], lay: layout.BackupLayout | None = None) -> Callable[[Entry], Chain]:
    """:func:`chain_of` for many restore points of the same ``entries``: the name index is built
    once (retention asks for the chain of every archive of a tier)."""
    by_name: dict[tuple[str, str, str], Entry] = {}
    for x in entries:
        by_name[(str(x.get("project")), str(x.get("tier")), str(x.get("filename")))] = x
    return lambda e: _follow(by_name, e, lay)


def _follow(
    by_name: Mapping[tuple[str, str, str], Entry], e: Entry, lay: layout.BackupLayout | None
) -> Chain:
    out: list[Entry] = []
    seen: set[str] = set()
    cur: Entry = e
    while True:
        name = str(cur.get("filename"))
        if name in seen:
            return Chain(list(reversed(out)), f"the chain of {e.get('filename')} loops at {name}")
        seen.add(name)
        out.append(cur)
        if lay is not None and not lay.archive(str(cur.get("path"))).is_file():
            return Chain(list(reversed(out)), f"{name} is not on disk")
        if cur is not e and failed(cur):
            return Chain(list(reversed(out)), f"{name} failed verification ({cur.get('verify_error')})")
        if kind_of(cur) == KIND_FULL:
            break
        parent = _link(cur.get("parent"))
        if parent is None:
            return Chain(list(reversed(out)), f"{name} is an incremental whose parent is not recorded")
        p = by_name.get((str(cur.get("project")), str(cur.get("tier")), parent["filename"]))
        if p is None:
            return Chain(list(reversed(out)), f"{parent['filename']} (the parent of {name}) is missing")
        if p.get("sha256") != parent["sha256"]:
            return Chain(
                list(reversed(out)),
                f"{parent['filename']} (the parent of {name}) is not the archive {name} was made over "
                f"(sha256 {str(p.get('sha256'))[:16]}, expected {parent['sha256'][:16]})",
            )
        cur = p
    archives = list(reversed(out))
    head = archives[0]
    if kind_of(e) == KIND_INCREMENTAL:
        full = _link(e.get("full"))
        if full is None or full != link_of(head):
            return Chain(archives, f"{e.get('filename')} names a full that is not the head of its chain")
    return Chain(archives)


def needed(entries: Iterable[Entry], kept: Iterable[Entry]) -> dict[str, list[str]]:
    """Every archive (by ``path``) that the restore points ``kept`` need, mapped to the kept ones
    that need it. An archive needed only by itself maps to [itself]."""
    chain = chains_in(entries)
    out: dict[str, list[str]] = {}
    for k in kept:
        for a in chain(k).archives:
            out.setdefault(str(a.get("path")), []).append(str(k.get("path")))
    return out


def children(entries: Iterable[Entry]) -> dict[str, list[Entry]]:
    """Parent filename -> the entries that name it as their parent (same project and tier)."""
    out: dict[str, list[Entry]] = {}
    for e in entries:
        p = _link(e.get("parent"))
        if kind_of(e) == KIND_INCREMENTAL and p is not None:
            out.setdefault(f"{e.get('project')}/{e.get('tier')}/{p['filename']}", []).append(e)
    return out


def size_problem(archives: Iterable[Entry], lay: layout.BackupLayout) -> str | None:
    """The first archive whose size on disk is not the one the manifest records (truncated or
    replaced), or that cannot be looked at: one stat each, never a read. None: all as recorded."""
    for a in archives:
        size = a.get("size_bytes")
        try:
            on_disk = os.stat(lay.archive(str(a.get("path")))).st_size
        except OSError as x:
            return f"{a.get('filename')} cannot be looked at: {x.strerror}"
        if isinstance(size, int) and on_disk != size:
            return (
                f"{a.get('filename')} has {on_disk} bytes on disk, the manifest records {size} "
                "(truncated or replaced?)"
            )
    return None
