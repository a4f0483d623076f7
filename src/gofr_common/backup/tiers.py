"""Tier copies: keep the first scheduled backup of each ISO week in ``weekly/`` and of each calendar
month in ``monthly/``, as a hard link (or, across file systems, a checked copy) of the daily one."""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from typing import cast

from . import layout
from .config import BackupConfig
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


def copy_to_tiers(config: BackupConfig, manifest: Manifest, entry: Entry, created: datetime) -> list[str]:
    """Copy a daily archive into the weekly/monthly tiers that want it; their paths."""
    lay = config.layout
    src = lay.archive(entry["path"])
    name = layout.parse(entry["filename"])
    assert name is not None
    out = []
    mine = [e for e in manifest.read() if e.get("project") == config.project]
    for tier in wanted_tiers(config, mine, created):
        d = lay.tier_dir(tier)
        d.mkdir(mode=0o750, exist_ok=True)
        dst = d / name.in_tier(tier).filename
        if dst.exists():
            continue
        try:
            os.link(src, dst)
            how = "hard link"
        except OSError:
            tmp = dst.with_name(dst.name + layout.PARTIAL_SUFFIX)
            shutil.copyfile(src, tmp)
            os.rename(tmp, dst)
            how = "copy"
        layout.write_sidecar(dst, entry["sha256"])  # type: ignore[arg-type]
        manifest.add(cast(Entry, {**entry, "tier": tier, "filename": dst.name, "path": lay.rel(dst)}))
        out.append(lay.rel(dst))
        event("tier.copy", f"kept in {tier}/ as {dst.name} ({how})", tier=tier)
    return out
