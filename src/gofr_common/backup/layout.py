"""Names and places: every file name and path under the backup directory has its owner here.

Backup directory (shared by every project that uses it; each operation touches only its own):
  manifest.json, .manifest.lock              the catalogue of archives (manifest.py)
  {tier}/gofr-{project}_{tier}_{YYYYmmdd_HHMMSS}[_N].tar[.gz|.bz2|.xz|.zst][.age]
  {tier}/<archive>.sha256                    its checksum, in ``sha256sum`` format
  {tier}/<archive>.partial                   an archive being written (never a finished one)
  daily/<archive>.snap[.partial]             MODE=incremental: the tree as of a chained archive
                                             (incremental.py), and one being written
  .gofr-{project}.lock                       the project's run lock (one run at a time)
  .gofr-{project}.state.json[.lock]          the service's state (state.py)
  .gofr-{project}.tmp/                       scratch space of one run (SQLite snapshots, encryption)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .codecs import CODECS, SUFFIXES

TIERS = ("daily", "weekly", "monthly")
TS_FORMAT = "%Y%m%d_%H%M%S"
PARTIAL_SUFFIX = ".partial"
SIDECAR_SUFFIX = ".sha256"
AGE_SUFFIX = ".age"
MANIFEST_NAME = "manifest.json"
MANIFEST_LOCK = ".manifest.lock"

ARCHIVE_RE = re.compile(
    r"^gofr-(?P<project>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)"
    rf"_(?P<tier>{'|'.join(TIERS)})_"
    r"(?P<ts>\d{8}_\d{6})(?:_(?P<seq>[1-9]\d{0,3}))?"
    rf"(?P<suffix>{'|'.join(re.escape(s) for s in sorted(SUFFIXES, key=len, reverse=True))})"
    rf"(?P<age>{re.escape(AGE_SUFFIX)})?$"
)


@dataclass(frozen=True)
class ArchiveName:
    project: str
    tier: str
    ts: str
    seq: int
    suffix: str
    encrypted: bool = False  # ".age": encrypted with age

    @property
    def filename(self) -> str:
        seq = f"_{self.seq}" if self.seq else ""
        return f"gofr-{self.project}_{self.tier}_{self.ts}{seq}{self.suffix}{AGE_SUFFIX if self.encrypted else ''}"

    def in_tier(self, tier: str) -> ArchiveName:
        """The same archive's name in another tier (a tier copy)."""
        return ArchiveName(self.project, tier, self.ts, self.seq, self.suffix, self.encrypted)


def parse(filename: str) -> ArchiveName | None:
    m = ARCHIVE_RE.match(filename)
    if not m:
        return None
    return ArchiveName(m["project"], m["tier"], m["ts"], int(m["seq"] or 0), m["suffix"], bool(m["age"]))


def make(project: str, tier: str, when: datetime, compression: str, seq: int = 0) -> ArchiveName:
    return ArchiveName(project, tier, when.strftime(TS_FORMAT), seq, CODECS[compression].suffix)


def plain_name(filename: str) -> str:
    """The name of the archive inside an encrypted one (``X.tar.gz`` for ``X.tar.gz.age``)."""
    return filename.removesuffix(AGE_SUFFIX)


def is_sealed(filename: str) -> bool:
    return filename.endswith(AGE_SUFFIX)


def entry_problem(e: object, project: str) -> str | None:
    """Why a manifest entry cannot name one of ``project``'s archives (None: it can). The manifest
    is untrusted input: an entry is only ever acted on (read for a scrub, deleted by retention,
    uploaded) as ``<tier>/<name>``, where the name is this project's archive pattern for that tier."""
    if not isinstance(e, dict):
        return "not an entry"
    path, tier, filename = e.get("path"), e.get("tier"), e.get("filename")
    if not all(isinstance(x, str) for x in (path, tier, filename)):
        return "path, tier or filename is missing"
    p = parse(filename)  # type: ignore[arg-type]
    if p is None:
        return f"{filename!r} is not an archive name"
    if p.project != project:
        return f"{filename!r} is an archive of project {p.project!r}"
    if tier != p.tier:
        return f"its tier {tier!r} is not the one its name says ({p.tier!r})"
    if path != f"{p.tier}/{filename}":
        return f"its path is not {p.tier}/{filename}"
    try:
        if datetime.fromisoformat(e["created"]).tzinfo is None:
            return "its created time has no UTC offset"
    except (TypeError, ValueError):
        return "its created time is not an ISO 8601 time"
    if not (e.get("size_bytes") is None or type(e.get("size_bytes")) is int):
        return "its size_bytes is not a number"
    return None


# -- sidecars ----------------------------------------------------------------------------------------
def sidecar_path(archive: Path) -> Path:
    return archive.with_name(archive.name + SIDECAR_SUFFIX)


def sidecar_text(digest: str, filename: str) -> bytes:
    """``<hex>  <filename>``: the format ``sha256sum -c`` reads, in the archive's directory."""
    return f"{digest}  {filename}\n".encode()


def write_sidecar(archive: Path, digest: str) -> None:
    from .fsutil import atomic_write_bytes

    atomic_write_bytes(sidecar_path(archive), sidecar_text(digest, archive.name))


def parse_sidecar(text: str, filename: str) -> str:
    """The hex digest a sidecar's text holds for ``filename``, or "" when it is malformed."""
    parts = text.strip().split()
    if len(parts) != 2 or len(parts[0]) != 64 or parts[1].lstrip("*") != filename:
        return ""
    try:
        int(parts[0], 16)
    except ValueError:
        return ""
    return parts[0].lower()


def read_sidecar(archive: Path) -> str | None:
    """The digest in ``archive``'s sidecar; None when there is none, "" when it is malformed."""
    try:
        text = sidecar_path(archive).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    return parse_sidecar(text, archive.name)


# -- the backup directory ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackupLayout:
    """Every path under one backup directory, for one project."""

    root: Path
    project: str

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def manifest_lock(self) -> Path:
        return self.root / MANIFEST_LOCK

    @property
    def run_lock(self) -> Path:
        return self.root / f".gofr-{self.project}.lock"

    @property
    def state(self) -> Path:
        return self.root / f".gofr-{self.project}.state.json"

    @property
    def state_lock(self) -> Path:
        return self.root / f".gofr-{self.project}.state.json.lock"

    @property
    def drill_lock(self) -> Path:
        """Held by a restore drill for as long as it runs (its scratch dir is its own)."""
        return self.root / f".gofr-{self.project}.drill.lock"

    def drill_dir(self, base: Path | None = None) -> Path:
        """A restore drill's scratch dir: in ``base`` (DRILL_DIR), or in the backup dir."""
        return (base or self.root) / f".gofr-{self.project}.drill"

    @property
    def tmp(self) -> Path:
        """Scratch space of one run (the caller holds the run lock)."""
        return self.root / f".gofr-{self.project}.tmp"

    def tier_dir(self, tier: str) -> Path:
        return self.root / tier

    def archive(self, rel: str) -> Path:
        return self.root / rel

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def archives_on_disk(self, every_project: bool = False) -> list[Path]:
        """Finished archives of this project (or of every project) in the tier directories."""
        out = []
        for tier in TIERS:
            d = self.tier_dir(tier)
            try:
                names = os.listdir(d)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for n in names:
                p = parse(n)
                if p and p.tier == tier and (every_project or p.project == self.project):
                    out.append(d / n)
        return sorted(out)

    def find(self, name: str) -> Path:
        """An archive named by the user: a file name (its tier folder taken from the name), a path
        relative to the backup dir, or a path. Raises ConfigError when there is no such file."""
        from .errors import ConfigError

        p = Path(name)
        if p.is_absolute() or os.sep in name:
            cand = p if p.is_absolute() else self.root / p
            if cand.is_file():
                return cand
            raise ConfigError(f"archive not found: {name}")
        parsed = parse(p.name)
        if parsed is None:
            raise ConfigError(
                f"{name!r} is not an archive name (expected gofr-{self.project}_<tier>_<YYYYmmdd_HHMMSS>.tar.*)"
            )
        cand = self.tier_dir(parsed.tier) / p.name
        if not cand.is_file():
            raise ConfigError(f"archive not found: {cand} (see 'gofr-backup list')")
        return cand
