"""Off-site copies in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Cloudflare R2, B2).

Layout under ``s3://bucket/prefix/``:
  {project}/manifest.json                    the per-project remote manifest (the source of truth)
  {project}/{tier}/{archive}[.age]           the archive (encrypted when ENCRYPT_RECIPIENTS is set)
  {project}/{tier}/{archive}[.age].sha256    its checksum, sha256sum format

An upload is: the archive (multipart above 8 MiB, retried with backoff), then a re-read of the
stored object to check its sha256, then its .sha256, then the manifest. Only objects listed in the
manifest are finished backups; an object of ours it does not list (a failed or interrupted upload)
is listed as incomplete and removed by a later sync once it is older than a grace period. Deletion
only ever removes this project's archives (by name, in their tier, under the prefix); the remote
manifest is rebuilt from the objects when it is missing or unreadable, never taken as empty.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from . import layout
from .archive_format import META_NAME
from .config import BackupConfig, RemoteConfig
from .errors import BackupError
from .log import event
from .manifest import Entry, new_entry

CHUNK = 8 << 20
ATTEMPTS = 4


class RemoteError(BackupError):
    pass


def _explain(e: Exception) -> str:
    """One line for an S3 failure that says what to fix."""
    code = getattr(e, "response", {}).get("Error", {}).get("Code") if hasattr(e, "response") else None
    if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403"):
        return (
            f"{code}: the S3 credentials were refused (check REMOTE_ACCESS_KEY_ID / REMOTE_SECRET_ACCESS_KEY)"
        )
    if code in ("NoSuchBucket", "404"):
        return f"{code}: the bucket does not exist (check REMOTE_URL)"
    if code:
        return f"{code}: {e}"
    return f"{type(e).__name__}: {e}"


class S3Remote:
    def __init__(self, rc: RemoteConfig, project: str) -> None:
        import boto3
        from botocore.config import Config

        self.rc = rc
        self.project = project
        self.base = "/".join(x for x in (rc.prefix, project) if x)
        self.manifest_state = "ok"  # how read_manifest found it: ok | missing | unreadable
        self.manifest_raw: bytes | None = None
        kw: dict[str, Any] = {"region_name": rc.region, "endpoint_url": rc.endpoint}
        if rc.access_key_id:
            kw.update(aws_access_key_id=rc.access_key_id, aws_secret_access_key=rc.secret_access_key)
        self.s3 = boto3.client(
            "s3",
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
                signature_version="s3v4",
                s3={"addressing_style": "path"},
            ),
            **kw,
        )

    # -- keys ---------------------------------------------------------------------------------
    def key(self, tier: str, filename: str) -> str:
        return f"{self.base}/{tier}/{filename}"

    @property
    def manifest_key(self) -> str:
        return f"{self.base}/manifest.json"

    def url(self, key: str) -> str:
        return f"s3://{self.rc.bucket}/{key}"

    def owns(self, key: str) -> bool:
        """True for this project's archives (and their .sha256) under its prefix, named by this
        project's pattern in their own tier: the only objects remote deletion ever removes."""
        name = key.removesuffix(layout.SIDECAR_SUFFIX)
        p = layout.parse(name.rsplit("/", 1)[-1])
        return p is not None and p.project == self.project and name == self.key(p.tier, p.filename)

    def entry_problem(self, e: Entry) -> str | None:
        """Why a remote manifest entry cannot be one of this project's archives (None: it can)."""
        why = layout.entry_problem(e, self.project)
        if why is None and e.get("key") != self.key(e["tier"], e["filename"]):
            why = f"its key {e.get('key')!r} is not {self.key(e['tier'], e['filename'])!r}"
        return why

    # -- low level, with retries -----------------------------------------------------------------
    def _retry(self, what: str, fn: Callable[[], Any]) -> Any:
        from boto3.exceptions import Boto3Error  # S3UploadFailedError wraps a failed PUT
        from botocore.exceptions import BotoCoreError, ClientError

        delay = 1.0
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return fn()
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code")
                if code in (
                    "SignatureDoesNotMatch",
                    "InvalidAccessKeyId",
                    "AccessDenied",
                    "NoSuchBucket",
                    "NoSuchKey",
                    "404",
                    "403",
                ):
                    raise RemoteError(f"{what}: {_explain(e)}") from None
                err: Exception = e
            except (BotoCoreError, Boto3Error, OSError) as e:
                err = e
            if attempt == ATTEMPTS:
                raise RemoteError(f"{what} failed after {ATTEMPTS} attempts: {_explain(err)}") from None
            event("remote.retry", f"{what}: {_explain(err)}; retrying in {delay:g}s", level=logging.WARNING)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def put_bytes(self, key: str, data: bytes) -> None:
        self._retry(f"upload {key}", lambda: self.s3.put_object(Bucket=self.rc.bucket, Key=key, Body=data))

    def get_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self._retry(
                f"download {key}", lambda: self.s3.get_object(Bucket=self.rc.bucket, Key=key)["Body"].read()
            )
        except RemoteError as e:
            if "NoSuchKey" in str(e) or "404" in str(e):
                return None
            raise
        except ClientError:  # pragma: no cover
            return None

    @contextlib.contextmanager
    def open_stream(self, key: str) -> Iterator[IO[bytes]]:
        body = self._retry(
            f"download {key}", lambda: self.s3.get_object(Bucket=self.rc.bucket, Key=key)["Body"]
        )
        try:
            yield body  # a streaming body: read(n) as it arrives, no local disk
        finally:
            body.close()

    def delete(self, keys: list[str]) -> None:
        """Delete this project's objects; anything else is refused, loudly (the remote manifest is
        untrusted input, and the prefix may hold other things)."""
        for k in keys:
            if not self.owns(k):
                event(
                    "remote.refused",
                    f"not deleting {self.url(k)}: it is not an archive of {self.project} under {self.base}/",
                    level=logging.ERROR,
                )
                continue
            self._retry(f"delete {k}", functools.partial(self.s3.delete_object, Bucket=self.rc.bucket, Key=k))

    def list_keys(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.rc.bucket, "Prefix": self.base + "/"}
            if token:
                kw["ContinuationToken"] = token
            r = self._retry(f"list {self.url(self.base)}", functools.partial(self.s3.list_objects_v2, **kw))
            out += r.get("Contents", [])
            if not r.get("IsTruncated"):
                return out
            token = r.get("NextContinuationToken")

    def read_header(self, key: str, filename: str) -> dict[str, Any] | None:
        """The header (first member) of a plain archive object, from its first MiB only; None when
        it cannot be read from that (the object is untrusted: nothing here raises for it)."""
        import io

        from .archive_format import open_tar_stream

        try:
            body = self._retry(
                f"download {key}",
                lambda: self.s3.get_object(Bucket=self.rc.bucket, Key=key, Range="bytes=0-1048575")["Body"],
            )
            data = body.read()
            with open_tar_stream(Path(filename), raw=io.BytesIO(data)) as tar:
                first = tar.next()
                f = tar.extractfile(first) if first is not None and first.name == META_NAME else None
                meta = json.loads(f.read(1 << 20)) if f is not None else None
        except Exception:  # noqa: BLE001 - a damaged or foreign object: no header
            return None
        return meta if isinstance(meta, dict) else None

    def sha256_of(self, key: str) -> str:
        """Re-read the stored object and hash it."""
        h = hashlib.sha256()
        with self.open_stream(key) as body:
            while b := body.read(CHUNK):
                h.update(b)
        return h.hexdigest()

    def upload_file(self, path: Path, key: str, sha256: str) -> None:
        """Multipart upload, then a re-read: the object is kept only if its sha256 matches."""
        from boto3.s3.transfer import TransferConfig

        cfg = TransferConfig(multipart_threshold=CHUNK, multipart_chunksize=CHUNK, max_concurrency=2)
        self._retry(
            f"upload {path.name}", lambda: self.s3.upload_file(str(path), self.rc.bucket, key, Config=cfg)
        )
        got = self.sha256_of(key)
        if got != sha256:
            with contextlib.suppress(Exception):
                self.delete([key])
            raise RemoteError(
                f"upload of {path.name} is corrupt on the remote (sha256 {got[:16]}… != {sha256[:16]}…)"
            )

    def download(self, key: str, dst: Path) -> None:
        partial = dst.with_name(dst.name + ".partial")
        try:
            self._retry(f"download {key}", lambda: self.s3.download_file(self.rc.bucket, key, str(partial)))
            os.rename(partial, dst)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(partial)

    # -- the remote manifest ---------------------------------------------------------------------
    def read_manifest(self) -> list[Entry]:
        """The remote manifest's entries. A missing or unreadable one is rebuilt from the objects
        and their .sha256 files (never taken as "no archives"); ``self.manifest_state`` says which
        (``ok``, ``missing``, ``unreadable``) and ``self.manifest_raw`` keeps an unreadable one."""
        raw = self.get_bytes(self.manifest_key)
        self.manifest_raw = raw
        if raw is None:
            self.manifest_state = "missing"
            event(
                "remote.manifest_missing",
                f"{self.url(self.manifest_key)} is missing; rebuilt from the objects and their .sha256 "
                "files (nothing is deleted in this run)",
                level=logging.WARNING,
            )
            return self.rebuild_manifest()
        try:
            doc = json.loads(raw)
            entries = doc["backups"]
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise TypeError("backups is not a list of entries")
            self.manifest_state = "ok"
            return entries
        except (ValueError, KeyError, TypeError):
            self.manifest_state = "unreadable"
            event(
                "remote.manifest_unreadable",
                f"{self.url(self.manifest_key)} is unreadable; rebuilt from the objects and their "
                ".sha256 files (nothing is deleted in this run)",
                level=logging.WARNING,
            )
            return self.rebuild_manifest()

    def rebuild_manifest(self) -> list[Entry]:
        """Entries for this project's archives that have a .sha256 object beside them."""
        objs = {o["Key"]: o for o in self.list_keys()}
        out = []
        for k, o in objs.items():
            if k.endswith(layout.SIDECAR_SUFFIX) or not self.owns(k):
                continue
            fn = k.rsplit("/", 1)[-1]
            p = layout.parse(fn)
            side_key = k + layout.SIDECAR_SUFFIX
            if p is None or side_key not in objs:
                continue
            side = layout.parse_sidecar((self.get_bytes(side_key) or b"").decode(errors="replace"), fn)
            e = new_entry(
                project=self.project,
                filename=fn,
                tier=p.tier,
                created=datetime.strptime(p.ts, layout.TS_FORMAT).astimezone().isoformat(),
                size_bytes=o["Size"],
                sha256=side or None,
                compression=None,
                file_count=None,
                source_bytes=None,
                trigger="rebuilt",
            )
            e.update({"key": k, "encrypted": p.encrypted})
            if not p.encrypted:  # its chain, as its own header names it (an encrypted one's is sealed)
                e.update(_chain_of_header(self.read_header(k, fn)))  # type: ignore[typeddict-item]
            out.append(e)
        return out

    def write_manifest(self, entries: list[Entry]) -> None:
        entries.sort(key=lambda e: (e["tier"], e["created"], e["filename"]))
        doc = {
            "format": 1,
            "project": self.project,
            "updated": datetime.now().astimezone().isoformat(),
            "backups": entries,
        }
        self.put_bytes(self.manifest_key, json.dumps(doc, indent=1).encode())


def _chain_of_header(meta: dict[str, Any] | None) -> dict[str, Any]:
    """``kind``/``parent``/``full`` for a rebuilt entry of a plain archive, from its header (whose
    links name plain archives: the remote objects themselves). Nothing when it names none."""
    if not isinstance(meta, dict) or meta.get("kind") not in ("full", "incremental"):
        return {}
    if meta["kind"] == "full":
        return {"kind": "full", "parent": None, "full": None}
    raw = meta.get("chain")
    c: dict[str, Any] = raw if isinstance(raw, dict) else {}
    links: dict[str, dict[str, str] | None] = {}
    for k in ("parent", "full"):
        v = c.get(k)
        ok = isinstance(v, dict) and all(isinstance(v.get(x), str) for x in ("filename", "sha256"))
        links[k] = {"filename": v["filename"], "sha256": v["sha256"]} if ok and isinstance(v, dict) else None
    return {"kind": "incremental", **links}


def remote_for(config: BackupConfig) -> S3Remote | None:
    return S3Remote(config.remote, config.project) if config.remote else None
