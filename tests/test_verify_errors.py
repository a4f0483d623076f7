"""A read error is not a bad archive (issue 12, item 11).

"Could not check" (EIO, out of memory, interrupted) leaves ``verified`` as it was and records a
``verify_error``; only "checked and bad" (checksum mismatch, corrupt or truncated stream) marks an
archive failed. Before prune deletes a failed archive it verifies it once more, and it never
deletes the last archive of a tier for that reason alone.

The read errors are real: the tier directory is a FUSE mount (tests/helpers/eiofs.py, spoken
straight to /dev/fuse) whose reads the kernel fails with EIO after a SIGUSR1 to the file system's
process, as a failing disk would. There is no device-mapper in this kernel for `dmsetup`'s error
target; FUSE is the next most real thing, since the EIO comes from the kernel to the read(2)
syscall of the process under test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gofrtest import Evidence, cli_env, manifest, reliability, run_cli, write


def _setup(tmp_path: Path, n: int) -> tuple[Path, dict[str, str], list[dict[str, Any]]]:
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "blob.bin", os.urandom(400_000))
    write(data / "storage" / "doc.json", "{}")
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})
    out = []
    for _ in range(n):
        r = run_cli("now", "--json", env=env)
        assert r.returncode == 0, r.stderr
        out.append(json.loads(r.stdout))
    return backups, env, out


def _rot(a: Path) -> Path:
    """Flip one bit in the middle of the archive, as bit rot would."""
    b = bytearray(a.read_bytes())
    b[len(b) // 2] ^= 0x10
    a.write_bytes(bytes(b))
    return a


def _entry(backups: Path, name: str) -> dict[str, Any]:
    return next(e for e in manifest(backups) if e["filename"] == name)


def _set(backups: Path, name: str, **fields: Any) -> None:
    doc = json.loads((backups / "manifest.json").read_text())
    for e in doc["backups"]:
        if e["filename"] == name:
            e.update(fields)
    (backups / "manifest.json").write_text(json.dumps(doc))


@reliability(
    "Read errors (real EIO) while verifying",
    "could not check, never failed: verified unchanged, verify_error recorded, nothing deleted "
    "(prune verifies a failed archive once more first)",
)
def test_a_read_error_is_could_not_check_and_never_gets_an_archive_deleted(
    tmp_path: Path, eio_mount: Callable[[Path, Path], subprocess.Popen[str]], evidence: Evidence
) -> None:
    with evidence.trial():  # one trial: every step below must hold
        # issue 12 item 11: EIO during verify marked a good archive "failed", and prune deleted it
        backups, env, (older, newer) = _setup(tmp_path, 2)
        disk = tmp_path / "disk"
        shutil.move(backups / "daily", disk)
        (backups / "daily").mkdir()
        fs = eio_mount(disk, backups / "daily")
        assert run_cli("verify", older["filename"], env=env).returncode == 0  # readable through FUSE
        before = _entry(backups, older["filename"])

        fs.send_signal(signal.SIGUSR1)  # the disk starts failing reads
        v = run_cli("verify", older["filename"], "--json", env=env)
        assert v.returncode == 1, v.stdout + v.stderr
        res = json.loads(v.stdout)["results"][0]
        assert res["checked"] is False and "Input/output error" in res["error"], res
        after = _entry(backups, older["filename"])
        assert after["verified"] is True, "a read error must not mark the archive failed"
        assert after["verified_at"] == before["verified_at"]
        assert "Input/output error" in after["verify_error"]
        assert "NOT CHECKED" in run_cli("verify", older["filename"], env=env).stdout

        # an earlier "failed" that may have been a read error too: prune verifies once more first,
        # and a second read error is no reason to delete
        _set(backups, older["filename"], verified=False, verify_error="checksum mismatch (stale)")
        p = run_cli("prune", "--json", env=env)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["deleted"] == []
        assert (disk / older["filename"]).is_file()
        assert "Input/output error" in _entry(backups, older["filename"])["verify_error"]

        fs.send_signal(signal.SIGUSR2)  # the disk recovers: the archive was good all along
        p = run_cli("prune", "--json", env=env)
        assert p.returncode == 0 and json.loads(p.stdout)["deleted"] == [], p.stdout
        healed = _entry(backups, older["filename"])
        assert healed["verified"] is True and healed["verify_error"] is None
        assert (disk / older["filename"]).is_file() and (disk / newer["filename"]).is_file()
    evidence.publish("a FUSE mount whose reads the kernel fails with EIO")


def test_a_failed_archive_is_verified_once_more_before_it_is_deleted(tmp_path: Path) -> None:
    # issue 12 item 11: one bad reading (a flipped bit in RAM, a flaky cable) was enough to delete
    backups, env, (older, newer) = _setup(tmp_path, 2)
    _set(backups, older["filename"], verified=False, verify_error="checksum mismatch: one bad reading")
    p = run_cli("prune", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["deleted"] == []
    assert (backups / older["path"]).is_file()
    e = _entry(backups, older["filename"])
    assert e["verified"] is True and e["verify_error"] is None
    # really bad: still deleted (after the second reading agrees)
    a = _rot(backups / older["path"])
    assert run_cli("verify", older["filename"], env=env).returncode == 1
    p = run_cli("prune", "--json", env=env)
    assert [d["filename"] for d in json.loads(p.stdout)["deleted"]] == [older["filename"]]
    assert not a.exists()


def test_the_last_archive_of_a_tier_is_kept_flagged_and_status_turns_unhealthy(tmp_path: Path) -> None:
    # issue 12 item 11: a tier's only archive was deleted for failed verification
    backups, env, (only,) = _setup(tmp_path, 1)
    a = _rot(backups / only["path"])
    assert run_cli("verify", only["filename"], env=env).returncode == 1
    p = run_cli("prune", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["deleted"] == []
    assert a.is_file(), "the last archive of a tier was deleted"
    st = run_cli("status", "--json", env=env)
    assert st.returncode == 1, st.stdout
    assert any(only["filename"] in r and "failed verification" in r for r in json.loads(st.stdout)["reasons"])
    lst = run_cli("list", env=env).stdout
    assert "FAILED" in lst


def test_status_reads_no_archive(
    tmp_path: Path, eio_mount: Callable[[Path, Path], subprocess.Popen[str]]
) -> None:
    # issue 12 item 16: status stats the newest restorable archive and never reads one, so a
    # disk that fails every read still gets a cheap answer (the scrub is what reads)
    backups, env, _ = _setup(tmp_path, 1)
    disk = tmp_path / "disk"
    shutil.move(backups / "daily", disk)
    (backups / "daily").mkdir()
    fs = eio_mount(disk, backups / "daily")
    fs.send_signal(signal.SIGUSR1)
    st = run_cli("status", "--json", env=env)
    assert st.returncode == 0, st.stdout
    assert json.loads(st.stdout)["restorable"]["filename"].startswith("gofr-plot_daily_")


def test_an_archive_whose_manifest_checksum_is_damaged_is_kept(tmp_path: Path) -> None:
    """The manifest is untrusted input: a wrong checksum there, with an archive that matches its own
    .sha256 and reads to its end, is the manifest's fault. Found by a new user: the scrub marked such
    an archive failed and prune deleted a good backup."""
    backups, env, (older, newer) = _setup(tmp_path, 2)
    _set(backups, older["filename"], sha256="0" * 64)
    v = run_cli("verify", older["filename"], "--json", env=env)
    assert v.returncode == 1  # the mismatch is reported ...
    res = json.loads(v.stdout)["results"][0]
    assert "the manifest says" in res["error"], res
    assert _entry(backups, older["filename"])["archive_intact"] is True  # ... as the manifest's fault
    p = run_cli("prune", "--json", env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["deleted"] == []
    assert (backups / older["path"]).is_file()
