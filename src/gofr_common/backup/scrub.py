"""Re-verification: an archive is read back again, not trusted for a year after one check.

:func:`check` verifies one archive (sealed ones too) and never lets an interruption or a read
error pass for a verdict; :func:`verdict_fields` says what the manifest records about it:

- checked (good or bad): ``verified``, ``verified_at``, ``verify_error``, ``archive_intact``;
- could not check (EIO, out of memory, interrupted): only ``verify_error`` and
  ``verify_tried_at``; ``verified`` and ``verified_at`` stay as they were.

:func:`scrub` is the run stage (run.py, scheduled runs only): the archives whose last check is
oldest are verified again, as many as ``SCRUB_MAX_BYTES`` allows. Hard links (a daily archive and
its weekly/monthly copies) are one file: read once, recorded for each. The outcome is kept in the
state file (``last_scrub``), which ``status`` reads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import layout, sealed
from .config import BackupConfig
from .errors import Interrupted
from .fsutil import NotOurs, regular_in, tier_dir_fd
from .log import event
from .manifest import Entry, Manifest
from .verify import VerifyResult, could_not_check, verify_archive


def check(
    config: BackupConfig, entry: Entry, should_stop: Callable[[], bool] = lambda: False
) -> VerifyResult:
    """Verify the archive ``entry`` names (whose path the caller has checked)."""
    path = config.layout.archive(entry["path"])
    try:
        if layout.is_sealed(path.name):
            return sealed.verify_sealed(
                path, entry.get("sha256"), entry.get("plain_sha256"), config.identity_file, should_stop
            )
        return verify_archive(path, entry.get("sha256"), should_stop=should_stop)
    except Interrupted as e:
        return could_not_check(VerifyResult(path, ok=False), e)


def verdict_fields(res: VerifyResult, now: str, entry: Entry | None = None) -> dict[str, Any]:
    """What the manifest records about a verification at ``now`` of ``entry``'s archive."""
    if not res.checked:
        return {"verify_error": res.error, "verify_tried_at": now}
    return {
        "verified": res.ok,
        "verified_at": now,
        "verify_error": res.error,
        # failed only because its .sha256 file is damaged (retention keeps it)
        "archive_intact": res.archive_intact and not res.ok,
        "verify_tried_at": now,
        **end_fields(res, entry),
    }


def end_fields(res: VerifyResult, entry: Entry | None) -> dict[str, Any]:
    """What the archive's end marker says of its completeness, as the backup itself records it in
    the entry (``complete``, and its ``warnings``, which name what could not be read), so that an
    entry rebuilt or adopted without them has them after one verification. The more cautious
    record wins: an entry that says incomplete stays incomplete. Nothing when the pass did not
    read an end marker (a truncated stream, a sealed archive checked without its identity)."""
    end = res.end
    if not isinstance(end, dict) or not isinstance(end.get("complete"), bool):
        return {}
    was = (entry or {}).get("complete")
    out: dict[str, Any] = {"complete": end["complete"] and not end.get("unreadable") and was is not False}
    warnings = end.get("warnings")
    if (
        not (entry or {}).get("warnings")
        and isinstance(warnings, list)
        and all(isinstance(w, str) for w in warnings)
    ):
        out["warnings"] = warnings
    return out


def last_check(e: Entry) -> datetime | None:
    """When the archive was last verified, or last tried (so an unreadable one does not starve
    the others); None: never (or the manifest holds no usable time)."""
    times = []
    for t in (e.get("verified_at"), e.get("verify_tried_at")):
        try:
            when = datetime.fromisoformat(t) if isinstance(t, str) else None
        except ValueError:
            when = None
        if when is not None and when.tzinfo is not None:
            times.append(when)
    return max(times, default=None)


@dataclass
class ScrubReport:
    time: str
    budget: int
    checked: list[str] = field(default_factory=list)
    bad: list[dict[str, str]] = field(default_factory=list)
    could_not_check: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # larger than the whole budget
    bytes_read: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "budget": self.budget,
            "checked": self.checked,
            "bad": self.bad,
            "could_not_check": self.could_not_check,
            "skipped": self.skipped,
            "bytes_read": self.bytes_read,
            "note": self.note,
        }


def candidates(config: BackupConfig, entries: list[Entry]) -> list[tuple[os.stat_result, list[Entry]]]:
    """This project's archives on disk as regular files, grouped by file (hard links are one),
    oldest last check first (never checked first)."""
    groups: dict[tuple[int, int], list[Entry]] = {}
    stats: dict[tuple[int, int], os.stat_result] = {}
    fds: dict[str, int | None] = {}
    try:
        for e in entries:
            if layout.entry_problem(e, config.project) is not None:
                continue
            tier = e["tier"]
            if tier not in fds:
                try:
                    fds[tier] = tier_dir_fd(config.backup_dir, tier)
                except (NotOurs, OSError):
                    fds[tier] = None
            fd = fds[tier]
            if fd is None:
                continue
            try:
                st = regular_in(fd, e["filename"])
            except (NotOurs, OSError):
                continue
            if st is None:
                continue
            key = (st.st_dev, st.st_ino)
            groups.setdefault(key, []).append(e)
            stats[key] = st
    finally:
        for fd in fds.values():
            if fd is not None:
                os.close(fd)

    def order(key: tuple[int, int]) -> tuple[int, datetime, str]:
        es = groups[key]
        checks = [last_check(e) for e in es]
        if any(c is None for c in checks):
            return (0, min(datetime.fromisoformat(e["created"]) for e in es), es[0]["path"])
        return (1, min(c for c in checks if c is not None), es[0]["path"])

    return [(stats[k], groups[k]) for k in sorted(groups, key=order)]


def scrub(
    config: BackupConfig,
    manifest: Manifest,
    now: str,
    should_stop: Callable[[], bool] = lambda: False,
    skip_paths: frozenset[str] = frozenset(),
) -> ScrubReport:
    """Verify again the archives checked longest ago, within ``SCRUB_MAX_BYTES``; record each
    verdict in the manifest and return what was found."""
    budget = config.scrub_max_bytes
    rep = ScrubReport(time=now, budget=budget)
    mine = [e for e in manifest.read() if e.get("project") == config.project]
    for st, group in candidates(config, mine):
        if should_stop():
            rep.note = "interrupted"
            break
        if any(e["path"] in skip_paths for e in group):
            continue  # verified in this very run
        if st.st_size > budget:
            rep.skipped.append(group[0]["filename"])
            continue
        if rep.bytes_read + st.st_size > budget:
            break  # the next run goes on from here
        res = check(config, group[0], should_stop)
        rep.bytes_read += st.st_size
        for e in group:
            manifest.set_fields(e["path"], **verdict_fields(res, now, e))
        name = group[0]["filename"]
        if not res.checked:
            rep.could_not_check.append({"filename": name, "error": res.error or ""})
            event("scrub.unchecked", f"scrub: {res.error}", level=logging.ERROR, filename=name)
        elif not res.ok and not res.archive_intact:
            rep.checked.append(name)
            rep.bad.append({"filename": name, "error": res.error or ""})
            event(
                "scrub.bad",
                f"scrub: {name} FAILED verification: {res.error}",
                level=logging.ERROR,
                filename=name,
            )
        else:
            rep.checked.append(name)
            if not res.ok:  # only its .sha256 file is damaged: reported, the archive is sound
                event("scrub.warning", f"scrub: {name}: {res.error}", level=logging.WARNING, filename=name)
    if rep.skipped:
        rep.note = (
            f"{len(rep.skipped)} archive(s) larger than {config.prefix}SCRUB_MAX_BYTES={budget} are never "
            "re-verified by the scrub; raise it (or run `gofr-backup verify --all`)"
        )
        event("scrub.skipped", rep.note, level=logging.WARNING)
    event(
        "scrub.done",
        f"scrub: {len(rep.checked)} archive(s) re-verified, {len(rep.bad)} bad, "
        f"{len(rep.could_not_check)} could not be checked",
        bytes=rep.bytes_read,
    )
    return rep
