"""The manifest: the catalogue of archives that every other stage reads.

``{backup_dir}/manifest.json`` holds one entry per archive (per tier). It is shared by every project
that uses the backup directory; each operation only reads and changes its own project's entries.
Writers hold an fcntl lock on ``.manifest.lock`` and replace the file atomically, so readers never
need a lock and never see half a file. A missing or unreadable manifest is rebuilt from the
archives, their ``.sha256`` files and their embedded JSON; an unreadable one is kept aside as
``manifest.json.corrupt-<time>``, never silently emptied.

Every entry is built by :func:`new_entry`, whoever makes it (a backup run, a rebuild, an upload).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

from . import layout
from .archive_format import read_meta
from .codecs import SUFFIXES
from .errors import BackupError
from .fsutil import atomic_write_json, file_lock

log = logging.getLogger("gofr_backup")

MANIFEST_FORMAT = 1


class Entry(TypedDict, total=False):
    """One archive (one file in one tier). Local and remote manifests hold the same shape; the
    remote one adds ``key``, ``encrypted``, ``plain_sha256`` and ``uploaded_at``."""

    project: str
    filename: str
    path: str  # "<tier>/<filename>", relative to the backup dir
    tier: str
    created: str  # ISO 8601 with a UTC offset
    size_bytes: int | None
    sha256: str | None
    compression: str | None
    verified: bool | None  # None: not verified (yet)
    verified_at: str | None  # when it was last checked (good or bad)
    verify_error: str | None  # why the last check failed, or could not be made
    verify_tried_at: str | None  # the last attempt, also one that could not read the archive
    archive_intact: bool  # failed only because its .sha256 file is damaged
    file_count: int | None
    source_bytes: int | None
    duration_s: float | None
    warnings: list[str]
    complete: bool | None  # False: some files could not be read
    trigger: str  # manual | schedule | catch-up | rebuilt
    encrypted: bool
    plain_sha256: str | None  # the archive inside an encrypted one
    key: str  # remote only: the object key
    uploaded_at: str  # remote only
    # the last restore drill of this archive (drill.py): at, ok, error, restore_seconds, seconds,
    # files, bytes, archive, checks, notes
    drill: dict[str, Any]
    # chained archives (chain.py): "full" or "incremental" (absent: a full); an incremental's
    # parent and its chain's full, each {"filename", "sha256"} (None for a full)
    kind: str
    parent: dict[str, str] | None
    full: dict[str, str] | None
    # the last source spot check against this archive (spot_check.py): at, ok, error, files,
    # missing, missing_paths, drift, drift_paths, sampled, ...
    spot_check: dict[str, Any]


def new_entry(
    *,
    project: str,
    filename: str,
    tier: str,
    created: str,
    size_bytes: int | None,
    sha256: str | None,
    compression: str | None,
    file_count: int | None,
    source_bytes: int | None,
    trigger: str,
    duration_s: float | None = None,
    warnings: Iterable[str] = (),
    complete: bool | None = None,
    verify_error: str | None = None,
) -> Entry:
    return Entry(
        project=project,
        filename=filename,
        path=f"{tier}/{filename}",
        tier=tier,
        created=created,
        size_bytes=size_bytes,
        sha256=sha256,
        compression=compression,
        verified=None,
        verified_at=None,
        verify_error=verify_error,
        file_count=file_count,
        source_bytes=source_bytes,
        duration_s=duration_s,
        warnings=list(warnings),
        complete=complete,
        trigger=trigger,
    )


def has_valid_time(e: Any) -> bool:
    """True when ``created`` is an ISO 8601 time with a UTC offset. Entries without one are never
    accepted half-way: they would crash every comparison with the others."""
    try:
        return datetime.fromisoformat(e["created"]).utcoffset() is not None
    except (KeyError, TypeError, ValueError):
        return False


# What each field of an entry may hold (absent is always allowed): anything read from disk is
# untrusted input, and a wrongly typed field must not reach the code that formats or compares it.
_NUM = (int, float)
_OPT_STR = (str, type(None))
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "project": (str,),
    "created": (str,),
    "size_bytes": (int, type(None)),
    "sha256": _OPT_STR,
    "compression": _OPT_STR,
    "verified": (bool, type(None)),
    "verified_at": _OPT_STR,
    "verify_error": _OPT_STR,
    "verify_tried_at": _OPT_STR,
    "archive_intact": (bool,),
    "file_count": (int, type(None)),
    "source_bytes": (int, type(None)),
    "duration_s": (*_NUM, type(None)),
    "warnings": (list,),
    "complete": (bool, type(None)),
    "trigger": (str,),
    "encrypted": (bool,),
    "plain_sha256": _OPT_STR,
    "key": (str,),
    "uploaded_at": (str,),
    "drill": (dict,),
    "spot_check": (dict,),
    "kind": (str,),
    "parent": (dict, type(None)),
    "full": (dict, type(None)),
}
# inside ``drill`` and ``spot_check``: what status, list, the metrics and the report read
RESULT_TYPES: dict[str, tuple[type, ...]] = {
    "at": (str,),
    "ok": (bool,),
    "error": _OPT_STR,
    "archive": _OPT_STR,
    "restore_seconds": (*_NUM, type(None)),
    "seconds": (*_NUM, type(None)),
    "cleanup_seconds": (*_NUM, type(None)),
    "files": (int, type(None)),
    "bytes": (int, type(None)),
}


_WORDS: dict[type, str] = {
    bool: "true/false",
    int: "a whole number",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def field_problem(e: dict[str, Any]) -> str | None:
    """The first field of entry ``e`` whose value has the wrong type, said in words (None: all are
    right). ``bool`` is never a number here, however Python counts it."""

    def bad(v: Any, types: tuple[type, ...]) -> bool:
        return not isinstance(v, types) or (isinstance(v, bool) and bool not in types)

    def said(k: str, v: Any, types: tuple[type, ...]) -> str:
        want = " or ".join(_WORDS.get(t, t.__name__) for t in types)
        return f"{k} is {v!r:.60}, expected {want}"

    for k, types in FIELD_TYPES.items():
        if k in e and bad(e[k], types):
            return said(k, e[k], types)
    if "warnings" in e and not all(isinstance(w, str) for w in e["warnings"]):
        return "warnings is not a list of strings"
    for key in ("drill", "spot_check"):
        for k, types in RESULT_TYPES.items():
            d = e.get(key)
            if isinstance(d, dict) and k in d and bad(d[k], types):
                return said(f"{key}.{k}", d[k], types)
    return None


def created_of(e: Entry) -> datetime:
    return datetime.fromisoformat(e["created"])


def failed(e: Entry) -> bool:
    """Known bad: failed verification, and not merely because its .sha256 file is damaged."""
    return e.get("verified") is False and not e.get("archive_intact")


def drill_failed(e: Entry) -> bool:
    """Its last restore drill failed: ``--latest`` and ``status`` pass it over. A drill that could
    not run (``checked: false``) says nothing about the archive."""
    d = e.get("drill")
    return isinstance(d, dict) and d.get("ok") is False and d.get("checked") is not False


UNKNOWN_HINT = "completeness unknown: run `gofr-backup verify --all`"
SEALED_UNKNOWN_HINT = (
    "completeness unknown: run `gofr-backup verify --all --identity FILE` (encrypted: without an "
    "identity, or IDENTITY_FILE, verify checks only the checksum and cannot read the end marker)"
)


def unknown_hint(entries: list[Entry]) -> str:
    """What to run to learn the completeness of ``entries``: sealed ones need an identity."""
    from .layout import is_sealed

    return SEALED_UNKNOWN_HINT if any(is_sealed(str(e.get("filename"))) for e in entries) else UNKNOWN_HINT


def unknown_completeness(entries: list[Entry]) -> list[Entry]:
    """Entries not known to be bad whose completeness is not known (rebuilt or adopted from the
    archive alone): a verification reads their end marker and records it. Newest first."""
    es = [e for e in entries if e.get("complete") is None and not failed(e) and not drill_failed(e)]
    return sorted(es, key=created_of, reverse=True)


def latest(entries: Iterable[Entry], usable: Callable[[Entry], bool] = lambda e: True) -> Entry | None:
    """The newest entry that has not failed verification and that ``usable`` accepts (a daily
    archive wins over its tier copies of the same moment)."""
    cands = [e for e in entries if e.get("verified") is not False and usable(e)]
    return max(cands, key=lambda e: (created_of(e), e["tier"] == "daily"), default=None)


def choose_archive(lay: layout.BackupLayout, name: str | None) -> tuple[Path, Entry | None]:
    """The archive a user names (see BackupLayout.find), or without a name the newest of the
    project that has not failed verification and is on disk (an incremental: with its chain
    intact, chain.chain_of); and its entry, if the manifest has
    one. Raises ConfigError (no such name) or BackupError (no archive at all). Reads only."""
    entries = Manifest(lay.root).load(lay.project, repair=False)
    if name:
        archive = lay.find(name)
        parsed = layout.parse(archive.name)
        if parsed is None or parsed.project != lay.project:
            from .errors import ConfigError

            raise ConfigError(
                f"{name} is not an archive of {lay.project} (expected gofr-{lay.project}_<tier>_<time>.tar.*): "
                f"a drill or spot check records its result for {lay.project}; look at other files with "
                "'restore NAME --target DIR'"
            )
    else:
        from . import chain  # chain.py reads manifest entries: imported here, not at the top

        def usable(e: Entry) -> bool:  # on disk, and an incremental's chain intact
            if not lay.archive(e["path"]).is_file():
                return False
            return chain.kind_of(e) != chain.KIND_INCREMENTAL or chain.chain_of(entries, e, lay).ok

        e = latest(entries, usable=usable)
        if e is None:
            raise BackupError(f"no usable backup of {lay.project} in {lay.root}")
        archive = lay.archive(e["path"])
    return archive, next((e for e in entries if lay.archive(e["path"]) == archive), None)


_SAID: set[str] = set()  # the damaged entries already reported by this process


class Manifest:
    def __init__(self, backup_dir: Path) -> None:
        self.dir = backup_dir
        self.path = backup_dir / layout.MANIFEST_NAME
        self.lock_path = backup_dir / layout.MANIFEST_LOCK
        self.read_error: str | None = None  # why read() found no entries: missing, unreadable

    # -- reading -------------------------------------------------------------------------------
    def _parse(self) -> list[Entry] | None:
        """Entries, or None when the file is missing. Raises ValueError when it is unreadable. An
        entry whose time cannot be trusted is rebuilt from its archive (or dropped if there is none)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("backups"), list):
            raise ValueError("not a gofr-backup manifest (no 'backups' list)")
        entries: list[Entry] = []
        for e in doc["backups"]:
            if not isinstance(e, dict) or not all(
                isinstance(e.get(k), str) for k in ("filename", "tier", "path")
            ):
                raise ValueError("an entry lacks filename/tier/path")
            why: str | None
            if not has_valid_time(e):
                why = f"has no valid created time with a UTC offset ({e.get('created')!r})"
            else:
                why = field_problem(e)
                if why is None:
                    entries.append(e)  # type: ignore[arg-type]
                    continue
            rebuilt = self._rebuild_one(e["path"])
            said = f"manifest entry {e['path']} {why}; " + (
                "rebuilt from its archive" if rebuilt else "dropped (no such archive)"
            )
            if said not in _SAID:  # one line per process, however often the manifest is read
                _SAID.add(said)
                log.warning("%s", said)
            if rebuilt is not None:
                entries.append(rebuilt)
        return entries

    def _rebuild_one(self, rel: str) -> Entry | None:
        name = layout.parse(os.path.basename(rel))
        if name is None or rel != f"{name.tier}/{name.filename}":
            return None
        archive = self.dir / rel
        return entry_from_archive(self.dir, archive) if archive.is_file() else None

    def read(self) -> list[Entry]:
        """Entries as they are on disk, without repairing anything (cheap; for status).
        ``read_error`` then says why there are none: the manifest is missing or unreadable."""
        self.read_error = None
        try:
            entries = self._parse()
        except (ValueError, OSError) as e:
            self.read_error = f"unreadable ({e})"
            return []
        if entries is None:
            self.read_error = "missing"
        return entries or []

    def load(self, project: str | None = None, repair: bool = True) -> list[Entry]:
        """Entries, rebuilding the manifest first if it is missing or unreadable (``repair``: on
        disk; otherwise, for read-only commands, in memory only)."""
        problem = "missing"
        try:
            entries = self._parse()
        except (ValueError, OSError) as e:
            entries, problem = None, f"unreadable ({e})"
        if entries is None and not repair:
            entries = rebuild_entries(self.dir)
            if entries:
                log.warning(
                    "manifest %s is %s; showing %d archive(s) rebuilt from the archives (the next "
                    "backup, prune or verify writes it)",
                    self.path,
                    problem,
                    len(entries),
                )
        if entries is None:
            try:
                entries = self.update(lambda es: None)
            except (OSError, BackupError):  # a read-only backup volume: rebuild in memory only
                entries = rebuild_entries(self.dir)
        return [e for e in entries if project is None or e.get("project") == project]

    # -- writing -------------------------------------------------------------------------------
    def update(self, fn: Callable[[list[Entry]], None], timeout: float = 60.0) -> list[Entry]:
        """Read-modify-write under the manifest lock. ``fn`` mutates the list in place."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.lock_path, timeout, "the manifest lock"):
            try:
                entries = self._parse()
            except (ValueError, OSError) as e:
                aside = self.path.with_name(f"{layout.MANIFEST_NAME}.corrupt-{datetime.now():%Y%m%d_%H%M%S}")
                os.replace(self.path, aside)
                log.warning(
                    "manifest %s is unreadable (%s); kept as %s and rebuilt from the archives",
                    self.path,
                    e,
                    aside.name,
                )
                entries = None
            if entries is None:
                entries = rebuild_entries(self.dir)
                if entries:
                    log.warning("manifest %s rebuilt from %d archive(s) on disk", self.path, len(entries))
            before = json.dumps(entries, sort_keys=True)
            fn(entries)
            if json.dumps(entries, sort_keys=True) != before or not self.path.exists():
                entries.sort(key=lambda e: (e.get("project", ""), e["tier"], e["created"], e["filename"]))
                atomic_write_json(
                    self.path,
                    {
                        "format": MANIFEST_FORMAT,
                        "updated": datetime.now().astimezone().isoformat(),
                        "backups": entries,
                    },
                )
            return entries

    def add(self, entry: Entry) -> None:
        def fn(es: list[Entry]) -> None:
            es[:] = [e for e in es if e["path"] != entry["path"]]
            es.append(entry)

        self.update(fn)

    def set_fields(self, rel_path: str, **fields: Any) -> None:
        def fn(es: list[Entry]) -> None:
            for e in es:
                if e["path"] == rel_path:
                    e.update(fields)  # type: ignore[typeddict-item]

        self.update(fn)


def entry_from_archive(backup_dir: Path, archive: Path, meta: dict[str, Any] | None = None) -> Entry:
    """A manifest entry reconstructed from an archive on disk (for rebuilds and adoption)."""
    parsed = layout.parse(archive.name)
    assert parsed is not None
    if meta is None:
        try:
            meta = read_meta(archive)
        except BackupError:
            meta = {}
    created = str(meta.get("created"))
    if not has_valid_time({"created": created}):  # the name's local time, then
        created = datetime.strptime(parsed.ts, layout.TS_FORMAT).astimezone().isoformat()
    e = new_entry(
        project=parsed.project,
        filename=archive.name,
        tier=parsed.tier,
        created=created,
        size_bytes=archive.stat().st_size,
        sha256=layout.read_sidecar(archive) or None,
        compression=_of_type(meta.get("compression"), str) or SUFFIXES[parsed.suffix].name,
        file_count=_of_type(meta.get("file_count"), int),
        source_bytes=_of_type(meta.get("source_bytes"), int),
        trigger="rebuilt",
        verify_error=None if meta else "archive header unreadable",
    )
    e.update(chain_fields(meta))  # type: ignore[typeddict-item]
    return e


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _chain_link(v: Any) -> dict[str, str] | None:
    """A header's {"filename", "sha256"} link, when well formed: an archive name and a hex digest."""
    if not isinstance(v, dict):
        return None
    name, sha = v.get("filename"), v.get("sha256")
    if not (isinstance(name, str) and layout.parse(name) is not None and isinstance(sha, str)):
        return None
    return {"filename": name, "sha256": sha} if _HEX64.match(sha) else None


def chain_fields(meta: dict[str, Any]) -> dict[str, Any]:
    """``kind``, ``parent`` and ``full`` of a chained archive, from its header (untrusted): {}
    for an archive without ``kind`` (full mode, or before chains existed: a full). A head gives
    ``kind: "full"``, parent and full None. An incremental whose ``chain`` is malformed keeps
    ``kind: "incremental"`` with parent/full None, so chain.chain_of calls it broken (so does any
    other ``kind``, from a later version or damage); never a full:
    taken for one, it would be restored alone and give one day's changes as the whole tree."""
    kind = meta.get("kind")
    if kind == "full":
        return {"kind": "full", "parent": None, "full": None}
    if kind is None:
        return {}
    link = meta.get("chain")
    link = link if isinstance(link, dict) else {}
    return {
        "kind": "incremental",
        "parent": _chain_link(link.get("parent")),
        "full": _chain_link(link.get("full")),
    }


def _of_type(v: Any, t: type) -> Any:
    """``v`` if it is a ``t`` (never a bool for a number), else None: an archive's header is
    untrusted input too."""
    return v if isinstance(v, t) and not (isinstance(v, bool) and t is not bool) else None


def rebuild_entries(backup_dir: Path) -> list[Entry]:
    lay = layout.BackupLayout(backup_dir, "")
    return [entry_from_archive(backup_dir, a) for a in lay.archives_on_disk(every_project=True)]


# -- what `list` shows ---------------------------------------------------------------------------------
@dataclass
class Listing:
    """This project's archives, newest first, with what is missing and what is untracked."""

    entries: list[Entry]
    missing: list[str] = field(default_factory=list)  # in the manifest, file gone
    untracked: list[str] = field(default_factory=list)  # on disk, not in the manifest

    def summary(self) -> dict[str, Any]:
        present = [e for e in self.entries if e["path"] not in self.missing]
        return {
            "count": len(present),
            "total_size_bytes": sum(int(e.get("size_bytes") or 0) for e in present),
            "oldest": min((e["created"] for e in present), default=None),
            "newest": max((e["created"] for e in present), default=None),
            "verified": sum(1 for e in present if e.get("verified") is True),
            "failed": sum(1 for e in present if e.get("verified") is False),
            "missing": self.missing,
            "untracked": self.untracked,
        }


def listing(lay: layout.BackupLayout, tier: str | None = None) -> Listing:
    mine = Manifest(lay.root).load(lay.project, repair=False)  # `list` never writes
    tracked = {e["path"] for e in mine}
    entries = [e for e in mine if tier is None or e["tier"] == tier]
    untracked = [
        lay.rel(a)
        for a in lay.archives_on_disk()
        if lay.rel(a) not in tracked and (tier is None or a.parent.name == tier)
    ]
    entries.sort(key=created_of, reverse=True)
    missing = [e["path"] for e in entries if not lay.archive(e["path"]).is_file()]
    return Listing(entries, missing, untracked)
