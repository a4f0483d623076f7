"""Off-site copies: ``sync`` makes the remote hold every verified local backup that remote
retention keeps, then applies remote retention and removes leftovers of interrupted uploads (ours
only, older than LEFTOVER_GRACE, never in a run that had to rebuild the remote manifest);
``fetched`` and ``verify_remote`` read a remote archive back (for restore and verify --remote),
``fetched_chain`` a whole chain (issue 17: an incremental is never restored alone). Chained
archives are uploaded as they are, with ``kind``/``parent``/``full`` in their remote entries; the
``.snap`` beside them is not uploaded (it only spares the next run a full)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from . import layout, sealed
from .chain import KIND_INCREMENTAL, chain_of, chains_in, kind_of, link_of
from .config import BackupConfig
from .errors import VerifyError
from .log import event
from .manifest import Entry, Manifest, new_entry
from .remote import S3Remote, remote_for
from .retention import Policy, plan_retention
from .schedule import Clock, now_iso
from .state import record_remote
from .verify import VerifyResult, verify_archive


@dataclass
class SyncReport:
    uploaded: list[str] = field(default_factory=list)
    deleted: list[dict[str, str]] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    remote_count: int = 0
    rebuilt: bool = False  # the remote manifest was missing or unreadable: rebuilt, nothing deleted
    incomplete: list[str] = field(default_factory=list)  # leftovers kept for now (grace period)
    foreign: list[str] = field(default_factory=list)  # not ours: never touched
    skipped: list[str] = field(default_factory=list)  # remote manifest entries that are not ours
    # bytes of the archives uploaded in this run (as stored: encrypted ones at their sealed size;
    # their .sha256 objects and the manifest are not counted): the run's off-site traffic
    uploaded_bytes: int = 0
    # archives the remote manifest listed whose object was gone from the bucket, uploaded again
    # from the local copy
    reuploaded: list[str] = field(default_factory=list)
    # archives whose object was gone and that are not here to upload again: dropped from the
    # remote manifest
    lost: list[str] = field(default_factory=list)
    # remote restore points that cannot be restored from the remote after this sync: {"filename",
    # "reason"} (a sync that leaves any says so and fails)
    broken: list[dict[str, str]] = field(default_factory=list)
    newest_broken: bool = False  # the newest remote restore point is one of them

    @property
    def not_whole(self) -> bool:
        """What fails a sync: an archive lost in this sync, or the newest remote restore point
        not restorable from the remote. Older broken points (a new chain has started since) are
        reported and listed, not a failure: the remote can restore its newest point, as local
        ``status`` judges the newest daily archive."""
        return bool(self.lost) or self.newest_broken

    def to_dict(self) -> dict[str, Any]:
        return {
            "uploaded": self.uploaded,
            "uploaded_bytes": self.uploaded_bytes,
            "deleted": self.deleted,
            "cleaned": self.cleaned,
            "remote_count": self.remote_count,
            "rebuilt": self.rebuilt,
            "incomplete": self.incomplete,
            "foreign": self.foreign,
            "skipped": self.skipped,
            "reuploaded": self.reuploaded,
            "lost": self.lost,
            "broken": self.broken,
            "newest_broken": self.newest_broken,
            "not_whole": self.not_whole,
        }


def remote_policy(config: BackupConfig) -> Policy:
    rc = config.remote
    assert rc is not None
    return Policy(rc.retention_days, rc.max_count, rc.weekly_weeks, rc.monthly_months)


LEFTOVER_GRACE = timedelta(hours=24)


def sync(config: BackupConfig, remote: S3Remote, now: datetime) -> SyncReport:
    rep = SyncReport()
    bdir = config.backup_dir
    rentries = remote.read_manifest()
    rebuilt = remote.manifest_state != "ok"
    if rebuilt:
        if remote.manifest_raw is not None:  # keep the unreadable one aside, never just replace it
            aside = f"{remote.manifest_key}.corrupt-{now:%Y%m%d_%H%M%S}"
            remote.put_bytes(aside, remote.manifest_raw)
        remote.write_manifest(rentries)
        rep.rebuilt = True
    # the remote manifest is untrusted input too: entries that are not this project's archives
    # under its prefix are reported and left alone (never planned for deletion)
    ours = []
    for e in rentries:
        why = remote.entry_problem(e)
        if why is None:
            ours.append(e)
        else:
            rep.skipped.append(f"remote manifest entry {e.get('key') or e.get('filename')!r}: {why}")
            event("remote.entry_skipped", f"{rep.skipped[-1]}; not touched", level=logging.WARNING)
    local = [
        e
        for e in Manifest(bdir).read()
        if e.get("project") == config.project
        and layout.entry_problem(e, config.project) is None
        and e.get("verified") is True
        and e.get("complete") is not False
        and (bdir / e["path"]).is_file()
    ]
    # entries whose object is gone from the bucket (a lifecycle rule, a hand): the remote manifest
    # is not taken on trust. One that is here is uploaded again (its entry is replaced, and the
    # links to it follow); one that is not is dropped from the remote manifest, and the restore
    # points that needed it are reported as broken below
    keys = {o["Key"] for o in remote.list_keys()}
    vanished = [e for e in ours if e["key"] not in keys]
    relink: dict[tuple[str, str], Entry] = {}  # (tier, plain name) -> the gone entry, to upload again
    if vanished:
        here = {(e["tier"], layout.plain_name(e["filename"])) for e in local}
        for e in vanished:
            plain = (str(e["tier"]), layout.plain_name(e["filename"]))
            if plain in here:
                relink[plain] = e
            else:
                rep.lost.append(e["filename"])
                event(
                    "remote.object_lost",
                    f"{remote.url(e['key'])} is listed in the remote manifest but missing from the bucket, "
                    "and there is no local copy to upload again: dropped from the remote manifest",
                    level=logging.ERROR,
                )
        gone_ids = {id(e) for e in vanished}
        rentries = [e for e in rentries if id(e) not in gone_ids]
        ours = [e for e in ours if id(e) not in gone_ids]
        remote.write_manifest(rentries)
    have = {layout.plain_name(e["filename"]) for e in ours}
    missing = [e for e in local if layout.plain_name(e["filename"]) not in have]
    # do not upload what remote retention would delete straight away
    # (planned over plain views: a local incremental chains with its parent's remote copy even
    # when that one is encrypted)
    new_ids = {id(e) for e in missing}
    doomed_new = {
        id(e)
        for e, _ in plan_retention(_plain_views(ours) + missing, now, remote_policy(config))
        if id(e) in new_ids
    }
    todo = sorted((e for e in missing if id(e) not in doomed_new), key=lambda e: e["created"])
    tmp = config.layout.tmp
    for e in todo:
        src = bdir / e["path"]
        encrypt = bool(config.encrypt_recipients) and not layout.is_sealed(e["filename"])
        name = e["filename"] + (layout.AGE_SUFFIX if encrypt else "")
        key = remote.key(e["tier"], name)
        try:
            if encrypt:
                tmp.mkdir(mode=0o700, exist_ok=True)
                up = tmp / name
                sha = sealed.encrypt_file(src, up, config.encrypt_recipients)
            else:
                up, sha = src, e["sha256"] or ""
            size = up.stat().st_size
            remote.upload_file(up, key, sha)
            remote.put_bytes(key + layout.SIDECAR_SUFFIX, layout.sidecar_text(sha, name))
        finally:
            if encrypt:
                shutil.rmtree(tmp, ignore_errors=True)
        r = new_entry(
            project=config.project,
            filename=name,
            tier=e["tier"],
            created=e["created"],
            size_bytes=size,
            sha256=sha,
            compression=e.get("compression"),
            file_count=e.get("file_count"),
            source_bytes=e.get("source_bytes"),
            trigger=e.get("trigger", "manual"),
            duration_s=e.get("duration_s"),
            warnings=e.get("warnings", []),
            complete=e.get("complete"),
        )
        r.update(_chain_fields(e, ours))  # type: ignore[typeddict-item]
        r.update(
            {
                "key": key,
                "encrypted": layout.is_sealed(name),
                "plain_sha256": e.get("plain_sha256")
                or (None if layout.is_sealed(e["filename"]) else e["sha256"]),
                "verified": True,
                "verified_at": now.isoformat(timespec="seconds"),
                "uploaded_at": now.isoformat(timespec="seconds"),
            }
        )
        old = relink.pop((str(e["tier"]), layout.plain_name(name)), None)
        if old is not None:
            # the same archive again (same plain checksum): its children's links follow it (an
            # encrypted one is sealed anew, with another checksum)
            if _plain_sha(old) == _plain_sha(r):
                _relink(ours, str(e["tier"]), link_of(old), link_of(r))
            rep.reuploaded.append(name)
            event(
                "remote.reuploaded",
                f"re-uploaded {name}: it was listed in the remote manifest but missing from the bucket",
                level=logging.WARNING,
            )
        rentries.append(r)
        ours.append(r)
        remote.write_manifest(rentries)  # progress survives an interruption
        rep.uploaded.append(name)
        rep.uploaded_bytes += size
        event("remote.uploaded", f"uploaded {name} to {remote.url(key)}", key=key, size_bytes=size)
    # remote retention (the newest verified remote copy is never deleted: plan_retention protects it)
    plan = plan_retention(ours, now, remote_policy(config))
    if plan:
        gone = {id(e) for e, _ in plan}
        rentries = [e for e in rentries if id(e) not in gone]
        ours = [e for e in ours if id(e) not in gone]  # what is left: counted and followed below
        remote.write_manifest(rentries)  # manifest first: an object it no longer lists is a leftover
        for e, why in plan:
            remote.delete([e["key"], e["key"] + layout.SIDECAR_SUFFIX])
            rep.deleted.append({"filename": e["filename"], "tier": e["tier"], "reason": why})
            event("remote.deleted", f"deleted {remote.url(e['key'])}: {why}")
    # leftovers: objects of ours the manifest does not list (failed or interrupted uploads), once
    # they are older than the grace period (an upload may be under way from elsewhere), and never
    # in the run that found the manifest missing or unreadable
    listed = _listed(remote, rentries)
    for o in remote.list_keys():
        k = o["Key"]
        if k in listed:
            continue
        if not remote.owns(k):
            rep.foreign.append(k)
            continue
        if rebuilt or now - o["LastModified"] < LEFTOVER_GRACE:
            rep.incomplete.append(k)
            continue
        with contextlib.suppress(Exception):
            remote.delete([k])
            rep.cleaned.append(k)
            event("remote.cleaned", f"removed leftover {remote.url(k)}", level=logging.WARNING)
    # (an entry left in ``relink`` was here but not uploaded again: remote retention would have
    # deleted it now; the restore points that needed it, if any are kept, are reported below)
    # what the remote cannot restore after this run: a restore point whose chain is not whole
    follow = chains_in(ours)
    for i, e in enumerate(sorted(ours, key=lambda e: e["created"], reverse=True)):
        c = follow(e)
        if c.broken:
            rep.broken.append({"filename": e["filename"], "reason": f"its chain is broken there: {c.broken}"})
            rep.newest_broken = rep.newest_broken or i == 0
    rep.remote_count = len(ours)
    return rep


def _plain_sha(e: Entry) -> Any:
    """The checksum of the plain archive a remote entry holds."""
    return e.get("plain_sha256") or (None if layout.is_sealed(str(e.get("filename"))) else e.get("sha256"))


def _relink(ours: list[Entry], tier: str, old: dict[str, str], new: dict[str, str]) -> None:
    """Remote entries of ``tier`` whose ``parent`` or ``full`` link is ``old`` name ``new`` instead
    (an archive uploaded again, sealed anew)."""
    if old == new:
        return
    for r in ours:
        if r.get("tier") != tier:
            continue
        for k in ("parent", "full"):
            if r.get(k) == old:
                r[k] = dict(new)


def _chain_fields(e: Entry, ours: list[Entry]) -> dict[str, Any]:
    """The remote entry's ``kind``, ``parent`` and ``full``: the local entry's, with each link
    naming the remote object of that archive (``X.age`` and its sealed checksum when it was
    encrypted on the way up), so that chain.chain_of follows remote entries as it does local
    ones. A link whose archive is not on the remote (yet) is kept as it is: the chain is then
    broken there, and says so. Absent for an entry written before chains (a full)."""
    if "kind" not in e:
        return {}
    out: dict[str, Any] = {"kind": kind_of(e)}
    for k in ("parent", "full"):
        v = e.get(k)
        link = v if isinstance(v, dict) else None
        if link is not None:
            plain = layout.plain_name(str(link.get("filename")))
            there = next(
                (
                    r
                    for r in ours
                    if r.get("tier") == e.get("tier")
                    and layout.plain_name(str(r.get("filename"))) == plain
                    and link.get("sha256") in (r.get("plain_sha256"), r.get("sha256"))
                ),
                None,
            )
            if there is not None:
                link = link_of(there)
        out[k] = link
    return out


def _plain_views(ours: list[Entry]) -> list[Entry]:
    """Remote entries as the plain archives they hold (``X`` and its plain checksum for ``X.age``,
    and links to such), so that they chain with local entries in one retention plan."""
    by_name = {(e.get("tier"), e.get("filename")): e for e in ours}

    def plain(link: Any, tier: Any) -> Any:
        if not isinstance(link, dict) or not isinstance(link.get("filename"), str):
            return link
        r = by_name.get((tier, link["filename"]))
        sha = link.get("sha256")
        if r is not None and r.get("sha256") == sha and isinstance(r.get("plain_sha256"), str):
            sha = r["plain_sha256"]
        return {"filename": layout.plain_name(link["filename"]), "sha256": sha}

    out = []
    for e in ours:
        if not layout.is_sealed(str(e.get("filename"))):
            out.append(e)
            continue
        v = Entry(
            {
                **e,
                "filename": layout.plain_name(e["filename"]),
                "sha256": e.get("plain_sha256") or e.get("sha256"),
            }
        )
        v["path"] = f"{e['tier']}/{v['filename']}"
        for k in ("parent", "full"):
            if k in e:
                v[k] = plain(e.get(k), e.get("tier"))
        out.append(v)
    return out


def _listed(remote: S3Remote, rentries: list[Entry]) -> set[str]:
    """The keys the manifest accounts for (its entries that are this project's archives)."""
    ours = [e for e in rentries if remote.entry_problem(e) is None]
    return {e["key"] for e in ours} | {e["key"] + layout.SIDECAR_SUFFIX for e in ours} | {remote.manifest_key}


def sync_and_record(config: BackupConfig, clock: Clock) -> SyncReport:
    """Upload what is missing, apply remote retention, record it. Raises RemoteError. The caller
    holds the run lock."""
    remote = remote_for(config)
    assert remote is not None and config.remote is not None
    rep = sync(config, remote, clock.now())
    # a sync that leaves the remote NOT whole (what `sync` exits 1 for) is a failed off-site
    # stage: recorded as a remote failure, and as `remote_broken` until a sync leaves it whole
    when = now_iso(clock.now())
    if rep.not_whole:
        record_remote(
            config,
            when,
            error=f"off-site copy NOT whole: {broken_text(rep)}",
            count=rep.remote_count,
            broken=[b["filename"] for b in rep.broken],
            lost=rep.lost,
        )
    else:
        record_remote(config, when, count=rep.remote_count)
    counts = (
        f"{len(rep.uploaded)} uploaded ({rep.uploaded_bytes} bytes), "
        f"{len(rep.deleted)} deleted, {rep.remote_count} on {config.remote.url}"
    )
    if rep.not_whole:
        event(
            "remote.chain_broken",
            f"off-site copy synced but NOT whole: {broken_text(rep)}; {counts}",
            level=logging.ERROR,
            lost=rep.lost,
            broken=[b["filename"] for b in rep.broken],
        )
    else:
        if rep.broken:  # older points only: the newest restores from the remote
            event("remote.old_points_broken", broken_text(rep), level=logging.WARNING)
        event(
            "remote.synced",
            f"off-site copy up to date: {counts}",
            uploaded=len(rep.uploaded),
            uploaded_bytes=rep.uploaded_bytes,
        )
    return rep


def broken_text(rep: SyncReport) -> str:
    """One line on what the remote lost and which restore points it cannot restore."""
    out = []
    if rep.lost:
        out.append(
            f"{', '.join(rep.lost)} listed in the remote manifest but missing from the bucket, and not here "
            "to upload again (dropped from the remote manifest)"
        )
    if rep.broken:
        out.append(
            "restore points that cannot be restored from the remote: "
            + ", ".join(f"{b['filename']} ({b['reason']})" for b in rep.broken)
        )
    return "; ".join(out)


def untracked_objects(
    remote: S3Remote, rentries: list[Entry], keys: set[str] | None = None
) -> tuple[list[str], list[str]]:
    """Objects under the prefix the manifest does not list: (ours, i.e. incomplete uploads that a
    later sync removes; foreign ones, which are never touched). ``keys``: the listing, if it was
    taken already."""
    listed = _listed(remote, rentries)
    if keys is None:
        keys = {o["Key"] for o in remote.list_keys()}
    left = sorted(k for k in keys if k not in listed)
    return [k for k in left if remote.owns(k)], [k for k in left if not remote.owns(k)]


def find_remote(rentries: list[Entry], name: str) -> Entry | None:
    """A remote entry by its file name (with or without ``.age``)."""
    return next((e for e in rentries if e["filename"] in (name, name + layout.AGE_SUFFIX)), None)


@contextlib.contextmanager
def fetched(remote: S3Remote, entry: Entry, identity: Path | None) -> Iterator[Path]:
    """Download a remote archive into a private temp dir and yield it as a plain archive with its
    .sha256 (decrypted if needed). The download is checked against the remote manifest's sha256
    before it is used, and the decrypted archive against its recorded plain checksum."""
    name = entry["filename"]
    if kind_of(entry) == KIND_INCREMENTAL:
        remote_chain(remote, remote.read_manifest(), entry)  # refuses a chain the remote lacks a part of
        raise VerifyError(
            f"refusing to restore {name} alone: it is an incremental archive, whose restore needs its "
            "whole chain (fetched_chain); nothing was changed"
        )
    with tempfile.TemporaryDirectory(prefix="gofr-fetch-") as td:
        dl = Path(td) / name
        remote.download(entry["key"], dl)
        got = sealed.sha256_file(dl)
        if entry.get("sha256") and got != entry["sha256"]:
            raise VerifyError(
                f"refusing {name}: the download has sha256 {got[:16]}…, the remote manifest says "
                f"{entry['sha256'][:16]}…"  # type: ignore[index]
            )
        if not layout.is_sealed(name):
            layout.write_sidecar(dl, got)
            _not_alone(dl, name)
            yield dl
            return
        with open(dl, "rb") as f, sealed.decrypted(f, name, identity, entry.get("plain_sha256")) as plain:
            dl.unlink()
            _not_alone(plain, name)
            yield plain


def _not_alone(plain: Path, name: str) -> None:
    """An incremental archive is never restored alone, whatever the remote manifest says of it (a
    rebuilt one does not know an encrypted archive's kind): its own header is read."""
    from .archive_format import read_meta

    if read_meta(plain).get("kind") == KIND_INCREMENTAL:
        raise VerifyError(
            f"refusing to restore {name} alone: its header says it is an incremental archive, whose "
            "restore needs its whole chain; nothing was changed"
        )


def remote_gaps(remote: S3Remote, rentries: list[Entry], keys: set[str]) -> Callable[[Entry], str | None]:
    """Why a remote restore point cannot be restored from the remote (None: it can): its chain,
    followed over the remote manifest's entries of this project, is broken, or an archive of it
    (itself included) is not among ``keys`` (the bucket's listing, see S3Remote.list_keys)."""
    follow = chains_in([e for e in rentries if remote.entry_problem(e) is None])

    def gap(e: Entry) -> str | None:
        c = follow(e)
        if c.broken:
            return f"its chain is broken there: {c.broken}"
        for a in c.archives:
            if a.get("key") not in keys:
                what = "its object" if a is e else f"{a['filename']} of its chain"
                return f"{what} is missing there ({remote.url(str(a.get('key')))})"
        return None

    return gap


def remote_chain(remote: S3Remote, rentries: list[Entry], entry: Entry) -> list[Entry]:
    """The remote entries of ``entry``'s chain, full first, each of whose objects is on the
    remote. Raises VerifyError (one line) naming the first link that is not."""
    ours = [e for e in rentries if remote.entry_problem(e) is None]
    c = chain_of(ours, entry)
    name = entry["filename"]
    if not c.ok:
        raise VerifyError(
            f"refusing to restore {name} from {remote.url(remote.base)}: its chain is broken there: "
            f"{c.broken}; nothing was changed"
        )
    if len(c.archives) > 1:
        keys = {o["Key"] for o in remote.list_keys()}
        for a in c.archives:
            if a["key"] not in keys:
                raise VerifyError(
                    f"refusing to restore {name} from {remote.url(remote.base)}: {a['filename']} of its "
                    f"chain is missing there ({remote.url(a['key'])}); nothing was changed"
                )
    return c.archives


@contextlib.contextmanager
def fetched_chain(
    remote: S3Remote, rentries: list[Entry], entry: Entry, identity: Path | None
) -> Iterator[list[Path]]:
    """Download the chain of the remote archive ``entry`` (a full: just it) into one private temp
    dir and yield the plain archives, full first, each with its .sha256. Before anything is
    yielded: every archive of the chain must be on the remote (:func:`remote_chain`), each
    download must match the remote manifest's sha256 (and a decrypted one its plain checksum),
    and each archive's own header must name, as its parent and full, the archives actually
    downloaded before it (file name and sha256): the remote manifest is untrusted too. Raises
    VerifyError (one line, naming the archive) otherwise; the temp dir is always removed."""
    from .archive_format import read_meta
    from .chain_verify import header_problem

    chain = remote_chain(remote, rentries, entry)
    with tempfile.TemporaryDirectory(prefix="gofr-fetch-") as td:
        out: list[Path] = []
        views: list[tuple[Entry, VerifyResult]] = []
        for a in chain:
            name = a["filename"]
            dl = Path(td) / name
            remote.download(a["key"], dl)
            got = sealed.sha256_file(dl)
            if a.get("sha256") and got != a["sha256"]:
                raise VerifyError(
                    f"refusing {name}: the download has sha256 {got[:16]}…, the remote manifest says "
                    f"{str(a['sha256'])[:16]}…"
                )
            if layout.is_sealed(name):
                plain = Path(td) / layout.plain_name(name)
                with open(dl, "rb") as f:
                    sealed.decrypt_to(f, plain, identity)
                dl.unlink()
                got = sealed.sha256_file(plain)
                if a.get("plain_sha256") and got != a["plain_sha256"]:
                    raise VerifyError(
                        f"refusing {name}: the decrypted archive does not match its recorded checksum"
                    )
                dl = plain
            layout.write_sidecar(dl, got)
            # the archive as downloaded, named as its children's headers name it
            view = Entry({**a, "filename": dl.name, "sha256": got})
            if views:
                view["parent"] = {"filename": views[-1][0]["filename"], "sha256": str(views[-1][0]["sha256"])}
                view["full"] = {"filename": views[0][0]["filename"], "sha256": str(views[0][0]["sha256"])}
            # a chain of one too: a "full" whose header says incremental is never restored alone
            why = header_problem(
                view, read_meta(dl), views[-1] if views else None, views[0][0] if views else None
            )
            if why:
                raise VerifyError(
                    f"refusing to restore {entry['filename']} from the remote: {why}; nothing was changed"
                )
            views.append((view, VerifyResult(dl, ok=True, sha256=got, archive_intact=True)))
            out.append(dl)
        yield out


def verify_remote(remote: S3Remote, entry: Entry, identity: Path | None) -> tuple[VerifyResult, str]:
    """Read a remote archive back, streamed (no local disk for a plain one). Encrypted: its
    checksum, and with an identity what is inside. Returns the result and a note on what was
    checked."""
    path = Path(entry["filename"])
    with remote.open_stream(entry["key"]) as body:
        if not entry.get("encrypted"):
            return verify_archive(path, entry.get("sha256"), stream=body, sidecar=False), ""
        if identity is None:
            h = hashlib.sha256()
            while b := body.read(1 << 20):
                h.update(b)
            ok = h.hexdigest() == entry.get("sha256")
            note = " (encrypted: checksum only; pass --identity to check inside)"
            return VerifyResult(path, ok, None if ok else "checksum mismatch"), note
        with sealed.decrypted(body, entry["filename"], identity) as plain:
            r = verify_archive(plain, entry.get("plain_sha256"), sidecar=False)
        return r, " (decrypted and checked)"
