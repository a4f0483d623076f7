"""sync: make the remote hold every verified local backup that remote retention keeps, then apply
remote retention and remove leftovers of interrupted uploads."""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from . import crypto, naming
from .archive import sidecar_path
from .config import BackupConfig
from .housekeeping import Manifest, Policy, plan_retention
from .log import event
from .remote import S3Remote


@dataclass
class SyncReport:
    uploaded: list[str] = field(default_factory=list)
    deleted: list[dict[str, str]] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    remote_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "uploaded": self.uploaded,
            "deleted": self.deleted,
            "cleaned": self.cleaned,
            "remote_count": self.remote_count,
        }


def remote_policy(config: BackupConfig) -> Policy:
    rc = config.remote
    assert rc is not None
    return Policy(rc.retention_days, rc.max_count, rc.weekly_weeks, rc.monthly_months)


def _base(filename: str) -> str:
    return filename.removesuffix(naming.AGE_SUFFIX)


def sync(config: BackupConfig, remote: S3Remote, now: datetime) -> SyncReport:
    rep = SyncReport()
    bdir = config.backup_dir
    rentries = remote.read_manifest()
    have = {_base(e["filename"]) for e in rentries}
    local = [
        e
        for e in Manifest(bdir).read()
        if e.get("project") == config.project
        and e.get("verified") is True
        and e.get("complete") is not False
        and (bdir / e["path"]).is_file()
    ]
    missing = [e for e in local if _base(e["filename"]) not in have]
    # do not upload what remote retention would delete straight away
    doomed_new = {
        id(e) for e, _ in plan_retention(rentries + missing, now, remote_policy(config)) if e in missing
    }
    todo = sorted((e for e in missing if id(e) not in doomed_new), key=lambda e: e["created"])
    tmp = bdir / f".gofr-{config.project}.tmp"
    for e in todo:
        src = bdir / e["path"]
        encrypt = bool(config.encrypt_recipients) and not e["filename"].endswith(naming.AGE_SUFFIX)
        name = e["filename"] + (naming.AGE_SUFFIX if encrypt else "")
        key = remote.key(e["tier"], name)
        try:
            if encrypt:
                tmp.mkdir(mode=0o700, exist_ok=True)
                up = tmp / name
                sha = crypto.encrypt_file(src, up, config.encrypt_recipients)
            else:
                up, sha = src, e["sha256"]
            remote.upload_file(up, key, sha)
            remote.put_bytes(key + ".sha256", f"{sha}  {name}\n".encode())
        finally:
            if encrypt:
                shutil.rmtree(tmp, ignore_errors=True)
        rentries.append(
            {
                "project": config.project,
                "filename": name,
                "tier": e["tier"],
                "key": key,
                "created": e["created"],
                "size_bytes": up.stat().st_size if not encrypt else None,
                "sha256": sha,
                "encrypted": name.endswith(naming.AGE_SUFFIX),
                "plain_sha256": e.get("plain_sha256")
                or (e["sha256"] if not e["filename"].endswith(naming.AGE_SUFFIX) else None),
                "compression": e.get("compression"),
                "file_count": e.get("file_count"),
                "source_bytes": e.get("source_bytes"),
                "verified": True,
                "verified_at": now.isoformat(timespec="seconds"),
                "uploaded_at": now.isoformat(timespec="seconds"),
            }
        )
        remote.write_manifest(rentries)  # progress survives an interruption
        rep.uploaded.append(name)
        event("remote.uploaded", f"uploaded {name} to {remote.url(key)}", key=key)
    # remote retention (the newest verified remote copy is never deleted: plan_retention protects it)
    plan = plan_retention(rentries, now, remote_policy(config))
    if plan:
        gone = {e["key"] for e, _ in plan}
        rentries = [e for e in rentries if e["key"] not in gone]
        remote.write_manifest(rentries)  # manifest first: an object it no longer lists is a leftover
        for e, why in plan:
            remote.delete([e["key"], e["key"] + ".sha256"])
            rep.deleted.append({"filename": e["filename"], "tier": e["tier"], "reason": why})
            event("remote.deleted", f"deleted {remote.url(e['key'])}: {why}")
    # leftovers: objects the manifest does not list (failed or interrupted uploads)
    listed = {e["key"] for e in rentries} | {e["key"] + ".sha256" for e in rentries} | {remote.manifest_key}
    for o in remote.list_keys():
        if o["Key"] not in listed:
            with contextlib.suppress(Exception):
                remote.delete([o["Key"]])
                rep.cleaned.append(o["Key"])
                event("remote.cleaned", f"removed leftover {remote.url(o['Key'])}", level=logging.WARNING)
    rep.remote_count = len(rentries)
    return rep


def untracked_objects(remote: S3Remote, rentries: list[dict[str, Any]]) -> list[str]:
    listed = {e["key"] for e in rentries} | {e["key"] + ".sha256" for e in rentries} | {remote.manifest_key}
    return sorted(o["Key"] for o in remote.list_keys() if o["Key"] not in listed)


def fetch(remote: S3Remote, entry: dict[str, Any], workdir: Path, identity: Path | None) -> Path:
    """Download a remote archive into ``workdir`` as a plain archive with its .sha256 (decrypted if
    needed). The download is checked against the remote manifest's sha256 before it is used."""
    name = entry["filename"]
    dl = workdir / name
    remote.download(entry["key"], dl)
    got = crypto.sha256_file(dl)
    if entry.get("sha256") and got != entry["sha256"]:
        dl.unlink()
        from .errors import VerifyError

        raise VerifyError(
            f"refusing {name}: the download has sha256 {got[:16]}…, the remote manifest says "
            f"{entry['sha256'][:16]}…"
        )
    if not name.endswith(naming.AGE_SUFFIX):
        sidecar_path(dl).write_text(f"{got}  {name}\n")
        return dl
    plain = workdir / _base(name)
    with open(dl, "rb") as f:
        crypto.decrypt_to(f, plain, identity)
    dl.unlink()
    psha = crypto.sha256_file(plain)
    if entry.get("plain_sha256") and psha != entry["plain_sha256"]:
        plain.unlink()
        from .errors import VerifyError

        raise VerifyError(f"refusing {name}: the decrypted archive does not match its recorded checksum")
    sidecar_path(plain).write_text(f"{psha}  {plain.name}\n")
    return plain
