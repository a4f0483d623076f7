"""age encryption (the age file format, via pyrage), streaming with bounded memory.

The checksum of an encrypted archive covers the encrypted file, so verifying it needs no key.
Decryption always goes to a temporary file that is used only if decryption completed: a truncated
ciphertext can yield megabytes of plaintext before the error.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import IO

from .errors import BackupError, ConfigError


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
