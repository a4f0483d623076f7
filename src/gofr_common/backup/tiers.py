"""Tier copies: keep the first scheduled backup of each ISO week in ``weekly/`` and of each calendar
month in ``monthly/`` (fulls only: an incremental archive is never copied, so those tiers never
depend on dailies that retention deletes), as a hard link (or, across file systems, a copy hashed while it is made and
fsynced, kept only when the hash matches) of the daily one."""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import cast

from . import layout
from .codecs import CHUNK
from .config import BackupConfig
from .fsutil import FILE_MODE, fsync_dir, remove_quietly
from .log import event
from .manifest import Entry, Manifest, created_of


def wanted_tiers(config: BackupConfig, entries: list[Entry], created: datetime) -> list[str]:
    """The tiers that have no archive yet for ``created``'s week / month."""
    mine = [e for e in entries if e.get("verified") is not False]
    wanted = []
    if config.enable_weekly:
        wk = created.isocalendar()[:2]
        if not any(e["tier"] == "weekly" and created_of(e).isocalendar()[:2] == wk for e in mine):
            wanted.append("weekly")
    if config.enable_monthly:
        mo = (created.year, created.month)
        if not any(e["tier"] == "monthly" and (created_of(e).year, created_of(e).month) == mo for e in mine):
            wanted.append("monthly")
    return wanted


def copy_to_tiers(
    config: BackupConfig, manifest: Manifest, entry: Entry, created: datetime, now: str | None = None
) -> list[str]:
    """Copy a daily archive into the weekly/monthly tiers that want it; their paths. A hard link
    is the same file (its verification is the daily one's); a plain copy is hashed while it is
    copied, fsynced, and kept (and "verified") only when that hash matches the archive's."""
    if entry.get("kind") == "incremental":  # never: the weekly/monthly tiers must not need a daily
        return []
    lay = config.layout
    src = lay.archive(entry["path"])
    name = layout.parse(entry["filename"])
    assert name is not None
    when = now or datetime.now().astimezone().isoformat(timespec="seconds")
    out = []
    mine = [e for e in manifest.read() if e.get("project") == config.project]
    for tier in wanted_tiers(config, mine, created):
        d = lay.tier_dir(tier)
        d.mkdir(mode=0o750, exist_ok=True)
        if os.path.islink(d):
            event(
                "tier.refused",
                f"{d} is a symlink: no {tier} copy (archives live in real directories only)",
                level=logging.ERROR,
            )
            continue
        dst = d / name.in_tier(tier).filename
        if dst.exists():
            continue
        copy = cast(Entry, {**entry, "tier": tier, "filename": dst.name, "path": lay.rel(dst)})
        try:
            os.link(src, dst)
            how = "hard link"
        except OSError:
            err = _checked_copy(src, dst, entry["sha256"])
            if err is not None:
                event(
                    "tier.copy_failed", f"no {tier} copy of {src.name}: {err}", level=logging.ERROR, tier=tier
                )
                continue
            how = "copy"
            copy.update(
                {"verified": True, "verified_at": when, "verify_error": None, "verify_tried_at": when}
            )
        layout.write_sidecar(dst, entry["sha256"])  # type: ignore[arg-type]
        manifest.add(copy)
        out.append(lay.rel(dst))
        event("tier.copy", f"kept in {tier}/ as {dst.name} ({how})", tier=tier)
    return out


def _checked_copy(src: Path, dst: Path, expected: str | None) -> str | None:
    """Copy ``src`` to ``dst`` through ``dst.partial``, hashing what is read, fsynced; renamed into
    place only when the hash matches ``expected``. Returns why not, or None."""
    tmp = dst.with_name(dst.name + layout.PARTIAL_SUFFIX)
    h = hashlib.sha256()
    try:
        with open(src, "rb") as fi:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            try:
                while b := fi.read(CHUNK):
                    h.update(b)
                    view = memoryview(b)
                    while view:
                        view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        if h.hexdigest() != expected:
            remove_quietly(tmp)
            return (
                f"the copy reads as sha256 {h.hexdigest()[:16]}…, the archive's is {str(expected)[:16]}…: "
                "the daily archive changed since it was verified (the scrub will look at it)"
            )
        os.rename(tmp, dst)
        fsync_dir(dst.parent)
    except OSError as e:
        remove_quietly(tmp)
        return f"copy failed: {e.strerror or e}"
    return None
