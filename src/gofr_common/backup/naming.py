"""Archive file names: ``gofr-{project}_{tier}_{YYYYmmdd_HHMMSS}[_N].tar[.ext]``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from .codecs import CODECS

TS_FORMAT = "%Y%m%d_%H%M%S"
ARCHIVE_RE = re.compile(
    r"^gofr-(?P<project>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)_(?P<tier>daily|weekly|monthly)_"
    r"(?P<ts>\d{8}_\d{6})(?:_(?P<seq>[1-9]\d{0,3}))?(?P<suffix>\.tar(?:\.gz|\.bz2|\.xz|\.zst)?)(?P<age>\.age)?$"
)
PARTIAL_SUFFIX = ".partial"
SIDECAR_SUFFIX = ".sha256"
AGE_SUFFIX = ".age"


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


def parse(filename: str) -> ArchiveName | None:
    m = ARCHIVE_RE.match(filename)
    if not m:
        return None
    return ArchiveName(m["project"], m["tier"], m["ts"], int(m["seq"] or 0), m["suffix"], bool(m["age"]))


def make(project: str, tier: str, when: datetime, compression: str, seq: int = 0) -> ArchiveName:
    return ArchiveName(project, tier, when.strftime(TS_FORMAT), seq, CODECS[compression].suffix)
