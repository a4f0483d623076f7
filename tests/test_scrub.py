"""Rolling re-verification (issue 12, item 13): archives are read again, not trusted for a year.

Each scheduled run re-verifies, oldest last check first, as many archives as SCRUB_MAX_BYTES
allows; `list`, `status` and the manifest show `verified_at`; tier copies made by plain copy are
hashed while copied and are "verified" only when that hash matches.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from gofrtest import SimClock, cli_env, manifest, needs, run_cli, write

from gofr_common.backup import BackupConfig, BackupService
from gofr_common.backup.health import health
from gofr_common.backup.manifest import Manifest
from gofr_common.backup.state import read_state
from gofr_common.backup.tiers import copy_to_tiers

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    data = tmp_path / "data"
    write(data / "storage" / "blob.bin", os.urandom(200_000))
    write(data / "storage" / "doc.json", "{}")
    return cli_env(data, tmp_path / "backups", **{"GOFR_{P}_BACKUP_PATHS": "storage:storage", **extra})


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x04
    p.write_bytes(bytes(b))


def _scheduled(svc: BackupService, clock: SimClock, days: int = 1) -> Any:
    out = svc.run_backup("daily", trigger="schedule")
    assert out.status == "ok", out.error
    clock.advance(days=days)
    return out


def test_a_scheduled_run_re_verifies_the_archive_checked_longest_ago(tmp_path: Path) -> None:
    # issue 12 item 13: archives were verified once, at creation, and then trusted for ever
    env = _env(tmp_path, **{"GOFR_{P}_BACKUP_SCRUB_MAX_BYTES": "300K"})  # one ~200 KB archive a run
    cfg = BackupConfig.from_env(env=env)
    clock = SimClock(T0)
    svc = BackupService(cfg, clock=clock)  # type: ignore[arg-type]
    outs = [_scheduled(svc, clock) for _ in range(3)]
    oldest = outs[0].path
    _flip(oldest)  # bit rot, days after the archive was verified
    # one archive a run, the one checked longest ago: within as many runs as there are archives,
    # the rotten one is read again
    for _ in range(3):
        _scheduled(svc, clock)
        if read_state(cfg)["last_scrub"]["bad"]:
            break
    st = read_state(cfg)
    assert [b["filename"] for b in st["last_scrub"]["bad"]] == [oldest.name], st["last_scrub"]
    e = next((x for x in Manifest(cfg.backup_dir).read() if x["filename"] == oldest.name), None)
    assert e is None or e["verified"] is False, "the rotten archive still counts as verified"
    assert not oldest.exists(), "a bad archive that is not its tier's last is deleted (after a 2nd read)"
    h = health(cfg, clock.now())
    assert not h.healthy and any("scrub" in r and oldest.name in r for r in h.reasons), h.reasons
    # the next scrub reads another archive, finds nothing bad, and health comes back
    _scheduled(svc, clock)
    st = read_state(cfg)
    assert st["last_scrub"]["bad"] == [] and len(st["last_scrub"]["checked"]) == 1
    assert health(cfg, clock.now()).healthy
    # every archive's last check is recorded; a scrubbed one was checked after its creation
    scrubbed = next(
        x for x in Manifest(cfg.backup_dir).read() if x["filename"] == st["last_scrub"]["checked"][0]
    )
    assert datetime.fromisoformat(scrubbed["verified_at"]) > datetime.fromisoformat(scrubbed["created"])


def test_the_scrub_budget_zero_huge_and_too_small(tmp_path: Path) -> None:
    # issue 12 item 13: SCRUB_MAX_BYTES bounds what one run reads; 0 turns the scrub off
    clock = SimClock(T0)
    for budget, expect in (("0", "off"), ("1", "skip"), ("1T", "all")):
        env = _env(tmp_path / budget, **{"GOFR_{P}_BACKUP_SCRUB_MAX_BYTES": budget})
        cfg = BackupConfig.from_env(env=env)
        svc = BackupService(cfg, clock=clock)  # type: ignore[arg-type]
        for _ in range(4):
            _scheduled(svc, clock)
        st = read_state(cfg).get("last_scrub")
        if expect == "off":
            assert st is None
        elif expect == "skip":  # every archive is larger than 1 byte: said, never silently skipped
            assert st["checked"] == [] and len(st["skipped"]) == 3 and "SCRUB_MAX_BYTES" in st["note"]
        else:  # every archive but the one this run wrote and verified, each once
            names = sorted(e["filename"] for e in Manifest(cfg.backup_dir).read())
            assert sorted(st["checked"]) == names[:3] and st["skipped"] == []


@pytest.mark.parametrize("bad", ["-1", "lots", "5Q", "1.5G", "99999P"])
def test_scrub_budget_is_validated(tmp_path: Path, bad: str) -> None:
    env = _env(tmp_path, **{"GOFR_{P}_BACKUP_SCRUB_MAX_BYTES": bad})
    r = run_cli("config", env=env)
    assert r.returncode == 2 and "GOFR_PLOT_BACKUP_SCRUB_MAX_BYTES" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_list_status_and_manifest_show_verified_at(tmp_path: Path) -> None:
    # issue 12 item 13: when was each archive last read back?
    env = _env(tmp_path)
    r = run_cli("now", "--json", env=env)
    assert r.returncode == 0, r.stderr
    e = json.loads(r.stdout)
    at = manifest(tmp_path / "backups")[0]["verified_at"]
    assert at and e["verified_at"] == at
    assert f"verified {at}" in run_cli("list", env=env).stdout
    st = run_cli("status", env=env)
    assert st.returncode == 0 and at in st.stdout, st.stdout
    assert json.loads(run_cli("status", "--json", env=env).stdout)["restorable"]["verified_at"] == at


@pytest.fixture
def tmpfs_monthly(tmp_path: Path) -> Iterator[Path]:
    needs(os.geteuid() == 0, "root (a tmpfs mount for a tier on another file system)")
    d = tmp_path / "backups" / "monthly"
    d.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_a_tier_copy_across_file_systems_is_hashed_while_copied(tmp_path: Path, tmpfs_monthly: Path) -> None:
    # issue 12 item 13: a plain copy inherited "verified" from its source without being checked
    env = _env(tmp_path, **{"GOFR_{P}_BACKUP_ENABLE_MONTHLY": "true"})
    cfg = BackupConfig.from_env(env=env)
    clock = SimClock(T0)
    svc = BackupService(cfg, clock=clock)  # type: ignore[arg-type]
    out = _scheduled(svc, clock)
    assert out.entry is not None and out.path is not None
    copies = [e for e in Manifest(cfg.backup_dir).read() if e["tier"] == "monthly"]
    assert len(copies) == 1 and (tmpfs_monthly / copies[0]["filename"]).stat().st_nlink == 1  # a copy
    assert copies[0]["verified"] is True and copies[0]["verified_at"] is not None
    # the daily archive rots after its own verification, before a copy is made: the copy must
    # not be called verified
    for p in tmpfs_monthly.iterdir():
        p.unlink()
    m = Manifest(cfg.backup_dir)
    m.update(lambda es: es.__setitem__(slice(None), [e for e in es if e["tier"] != "monthly"]))
    _flip(out.path)
    made = copy_to_tiers(cfg, m, out.entry, datetime.fromisoformat(out.entry["created"]))
    assert made == []
    assert not [e for e in m.read() if e["tier"] == "monthly" and e.get("verified") is True]
    assert not [p for p in tmpfs_monthly.iterdir() if p.name.endswith(".tar.gz")], "an unchecked copy is left"
