"""Sealed archives: age encryption (the age file format, via pyrage), streaming, bounded memory.

A sealed archive is ``<archive>.age``. Its checksum (``.sha256``, the manifest's ``sha256``) covers
the encrypted file, so checking it needs no key; the manifest's ``plain_sha256`` is the archive
inside. Decryption always goes to a temporary file that is used only if decryption completed: a
truncated ciphertext can yield megabytes of plaintext before the error. Every reader of a sealed
archive (verify, restore, fetch from the remote) goes through :func:`decrypted`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from . import layout
from .errors import BackupError, ConfigError, VerifyError
from .verify import VerifyResult, could_not_check, verify_archive


def recipients(keys: tuple[str, ...]) -> list[object]:
    import pyrage

    return [pyrage.x25519.Recipient.from_str(k) for k in keys]


def load_identities(path: Path) -> list[object]:
    import pyrage

    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read the age identity file {path}: {e.strerror}") from None
    ids = []
    for ln in lines:
        ln = ln.strip()
        if ln.startswith("AGE-SECRET-KEY-"):
            try:
                ids.append(pyrage.x25519.Identity.from_str(ln))
            except Exception:  # noqa: BLE001
                raise ConfigError(f"{path} holds a malformed age identity") from None
    if not ids:
        raise ConfigError(f"{path} holds no age identity (AGE-SECRET-KEY-1...): make one with age-keygen")
    return ids


def encrypt_file(src: Path, dst: Path, keys: tuple[str, ...]) -> str:
    """Encrypt ``src`` into ``dst`` (written as ``dst.partial``, fsynced, renamed). Returns the
    sha256 of the encrypted file."""
    import pyrage

    partial = dst.with_name(dst.name + ".partial")
    try:
        with open(src, "rb") as fi, open(partial, "wb") as fo:
            pyrage.encrypt_io(fi, fo, recipients(keys))
            fo.flush()
            os.fsync(fo.fileno())
        os.rename(partial, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return sha256_file(dst)


def decrypt_to(src: IO[bytes], dst: Path, identity_file: Path | None) -> None:
    """Decrypt the stream into ``dst``; on any failure ``dst`` does not exist afterwards."""
    import pyrage

    if identity_file is None:
        raise ConfigError("this archive is encrypted: pass --identity FILE (or set IDENTITY_FILE)")
    ids = load_identities(identity_file)
    partial = dst.with_name(dst.name + ".partial")
    try:
        with open(partial, "wb") as fo:
            pyrage.decrypt_io(src, fo, ids)
        os.rename(partial, dst)
    except (pyrage.DecryptError, pyrage.IdentityError, OSError, ValueError) as e:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        msg = str(e) or type(e).__name__
        if "no matching keys" in msg.lower() or "decryption error" not in msg.lower():
            raise BackupError(f"cannot decrypt: {msg} (is {identity_file} the right identity?)") from None
        raise BackupError(f"cannot decrypt: {msg} (the file is damaged or truncated)") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def checksum_error(path: Path, expected: str | None) -> tuple[str | None, str | None]:
    """(sha256 of the sealed file, the reason it cannot be trusted or None): it must match its
    ``.sha256`` file and, when known, the manifest's checksum. Reads the file; needs no key."""
    if not path.is_file():
        return None, f"archive not found: {path}"
    sha = sha256_file(path)
    side = layout.read_sidecar(path)
    if side is None and expected:  # the manifest still holds the checksum (see verify_archive)
        side = expected
    if not side:
        kind = "missing" if side is None else "malformed"
        return sha, f"checksum file {kind}: {layout.sidecar_path(path).name}"
    if sha != side or (expected and sha != expected):
        return sha, f"checksum mismatch: {path.name} has sha256 {sha[:16]}…"
    return sha, None


@contextlib.contextmanager
def decrypted(
    src: IO[bytes], sealed_name: str, identity: Path | None, plain_sha256: str | None = None
) -> Iterator[Path]:
    """Decrypt the sealed archive read from ``src`` into a private temp dir; yield the plain
    archive (with its ``.sha256``), checked against ``plain_sha256`` when that is known. The temp
    dir is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="gofr-sealed-") as td:
        plain = Path(td) / layout.plain_name(sealed_name)
        decrypt_to(src, plain, identity)
        psha = sha256_file(plain)
        if plain_sha256 and psha != plain_sha256:
            raise VerifyError(
                f"refusing {sealed_name}: the decrypted archive does not match its recorded checksum"
            )
        layout.write_sidecar(plain, psha)
        yield plain


def verify_sealed(
    path: Path,
    expected_sha256: str | None,
    plain_sha256: str | None,
    identity: Path | None,
    should_stop: Callable[[], bool] = lambda: False,
) -> VerifyResult:
    """The checksum of the sealed file (no key needed); with an identity, the archive inside is
    decrypted to a temp file and verified in full too."""
    try:
        sha, err = checksum_error(path, expected_sha256)
    except (OSError, MemoryError) as e:  # could not read it: nothing is known about it
        return could_not_check(VerifyResult(path, ok=False), e)
    note = None
    if layout.read_sidecar(path) is None and expected_sha256:
        note = f"{layout.sidecar_path(path).name} is missing: checked against the manifest's checksum"
    if err or identity is None:
        return VerifyResult(
            path,
            ok=err is None,
            error=err,
            sha256=sha,
            archive_intact=err is None,
            note=note,
            checksum_only=err is None,
        )
    with open(path, "rb") as f, decrypted(f, path.name, identity) as plain:
        inner = verify_archive(plain, plain_sha256, sidecar=False, should_stop=should_stop)
    inner.path, inner.sha256, inner.note = path, sha, note
    return inner
