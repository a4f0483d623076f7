"""A killed backup leaves nothing that looks finished; the manifest survives loss and corruption."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from gofrtest import SRC, Evidence, manifest, partials, popen_cli, reliability, run_cli, write

KEYS = (
    "filename",
    "path",
    "tier",
    "created",
    "size_bytes",
    "sha256",
    "compression",
    "file_count",
    "source_bytes",
)


def _big(app: dict[str, Any], mb: int = 32) -> None:
    # incompressible, so xz takes seconds: long enough to kill mid-write
    for i in range(mb // 8):
        write(app["data"] / "storage" / "big" / f"blob{i}.bin", os.urandom(8 << 20))


def _wait_for_partial(backups: Path, proc: Any, min_bytes: int = 1 << 16, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p, size in partials(backups / "daily").items():
            if size >= min_bytes:
                return p
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("no partial archive appeared")


def test_sigkill_mid_write_leaves_no_archive_and_next_run_succeeds(app: dict[str, Any]) -> None:
    _big(app)
    env = {**app["env"], "GOFR_PLOT_BACKUP_COMPRESSION": "xz"}
    assert run_cli("now", env={**env, "GOFR_PLOT_BACKUP_PATHS": "auth:auth"}).returncode == 0
    before = manifest(app["backups"])
    proc = popen_cli("now", env=env)
    partial = _wait_for_partial(app["backups"], proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = [
        p
        for p in (app["backups"] / "daily").iterdir()
        if not p.name.endswith((".partial", ".sha256")) and p.name != before[0]["filename"]
    ]
    assert finished == [], "a killed backup must not leave anything that looks like a finished archive"
    assert manifest(app["backups"]) == before
    assert partial.exists()  # what the dead process left ...
    fast = {**env, "GOFR_PLOT_BACKUP_COMPRESSION": "gzip", "GOFR_PLOT_BACKUP_COMPRESSION_LEVEL": "1"}
    r = run_cli("now", "--json", env=fast)
    assert r.returncode == 0, r.stderr
    assert not partial.exists()  # ... is cleaned up by the next run
    assert json.loads(r.stdout)["verified"] is True
    assert len(manifest(app["backups"])) == 2
    assert run_cli("verify", "--all", env=fast).returncode == 0


def test_sigterm_mid_write_removes_partial(app: dict[str, Any]) -> None:
    _big(app)
    env = {**app["env"], "GOFR_PLOT_BACKUP_COMPRESSION": "xz"}
    proc = popen_cli("now", env=env)
    _wait_for_partial(app["backups"], proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 1 and "interrupted" in err
    assert list((app["backups"] / "daily").iterdir()) == []
    assert manifest(app["backups"]) == []


def test_deleted_manifest_is_rebuilt_with_the_same_entries(app: dict[str, Any]) -> None:
    for tier in ("daily", "daily", "weekly", "monthly"):
        assert run_cli("now", "--tier", tier, env=app["env"]).returncode == 0
    before = manifest(app["backups"])
    (app["backups"] / "manifest.json").unlink()
    r = run_cli("list", "--json", env=app["env"])  # list shows them, but never writes (issue 13)
    assert r.returncode == 0 and "4 archive(s) rebuilt from the archives" in r.stderr
    assert len(json.loads(r.stdout)["backups"]) == 4
    assert not (app["backups"] / "manifest.json").exists()
    r = run_cli("prune", env=app["env"])
    assert r.returncode == 0
    assert "rebuilt from 4 archive(s)" in r.stderr
    after = manifest(app["backups"])
    assert [{k: e[k] for k in KEYS} for e in after] == [{k: e[k] for k in KEYS} for e in before]
    # verification state is not in the archives: rebuilt entries say "not verified", never "failed"
    assert all(e["verified"] is None for e in after)


def test_corrupt_manifest_is_kept_aside_and_rebuilt(app: dict[str, Any]) -> None:
    assert run_cli("now", env=app["env"]).returncode == 0
    before = manifest(app["backups"])
    (app["backups"] / "manifest.json").write_text('{"backups": [ {"filename": tru')
    r = run_cli("list", "--json", env=app["env"])
    assert r.returncode == 0 and "unreadable" in r.stderr
    assert not list(app["backups"].glob("manifest.json.corrupt-*"))  # list never writes
    r = run_cli("prune", env=app["env"])
    assert r.returncode == 0 and "unreadable" in r.stderr
    aside = list(app["backups"].glob("manifest.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text().startswith('{"backups"')
    assert [e["sha256"] for e in manifest(app["backups"])] == [before[0]["sha256"]]
    # and it is never silently emptied: a following backup keeps the old entry
    assert run_cli("now", env=app["env"]).returncode == 0
    assert len(manifest(app["backups"])) == 2


def test_manifest_is_created_0640_and_no_temp_file_is_left(app: dict[str, Any]) -> None:
    for _ in range(3):
        assert run_cli("now", env=app["env"]).returncode == 0
    stray = [p.name for p in app["backups"].iterdir() if p.name.endswith(".tmp")]
    assert stray == []
    mode = (app["backups"] / "manifest.json").stat().st_mode & 0o777
    assert mode in (0o600, 0o640)


# A real writer process rewrites a ~3 MB manifest through the Manifest class as fast as it can; each
# update adds one entry, so a whole manifest always holds entries 0..n-1 and nothing else.
WRITER = """
import sys
from pathlib import Path
from gofr_common.backup.manifest import Manifest

def add(es):
    n = len(es)
    es.append({"project": "plot", "filename": f"f{n:06d}", "path": f"daily/f{n:06d}", "tier": "daily",
               "created": "2026-01-01T02:00:00+00:00", "sha256": "0" * 64, "pad": "x" * 200})

m = Manifest(Path(sys.argv[1]))
while True:
    m.update(add)
"""


# A reader process reads the manifest in a loop; each torn read becomes a line of its log. At the
# stop file it prints how many reads it made.
READER = """
import json, sys
from pathlib import Path

bdir, log, stop = Path(sys.argv[1]), open(sys.argv[2], "a"), Path(sys.argv[3])
reads = 0
while not stop.exists():
    try:
        doc = json.loads((bdir / "manifest.json").read_bytes())
        names = [e["filename"] for e in doc["backups"]]
        assert names == [f"f{i:06d}" for i in range(len(names))], "entries missing or out of order"
        assert all({"filename", "path", "tier", "created"} <= set(e) for e in doc["backups"])
        reads += 1
    except Exception as e:
        log.write(repr(e)[:200] + "\\n")
        log.flush()
print(reads)
"""


def _whole(raw: bytes) -> int:
    """The number of entries of a complete manifest; raises if ``raw`` is anything else."""
    doc = json.loads(raw)
    names = [e["filename"] for e in doc["backups"]]
    assert names == [f"f{i:06d}" for i in range(len(names))], "entries missing or out of order"
    assert all(set(KEYS[:4]) <= set(e) for e in doc["backups"])
    return len(names)


@reliability(
    "SIGKILL during a manifest write, with concurrent readers",
    "manifest.json is replaced atomically: after every kill it is whole (the old or the new version), "
    "and no read by a concurrent process ever sees a partial file",
)
def test_manifest_write_is_atomic_under_sigkill_and_concurrent_readers(
    tmp_path: Path, evidence: Evidence
) -> None:
    """A third of the kills land at a random time; the others wait until the writer has created
    the temp file of a new version and land a random fraction of a write's duration later. The
    temp file still there after the kill shows that the kill landed during the write."""
    import random
    import subprocess
    import sys

    from gofr_common.backup.manifest import Manifest

    bdir = tmp_path / "backups"
    # one update of 10,000 entries (~4 MB); the writer then adds one entry per update
    Manifest(bdir).update(lambda es: es.extend(_entry(i) for i in range(10_000)))
    assert _whole((bdir / "manifest.json").read_bytes()) == 10_000
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    torn_log, stop = tmp_path / "torn.log", tmp_path / "stop"
    torn_log.touch()
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(bdir), str(torn_log), str(stop)], stdout=subprocess.PIPE, text=True
    )
    rng = random.Random(int(os.environ.get("GOFR_FAULT_SEED", "1")))
    mid_write = 0
    last = 10_000
    try:
        for i in range(int(os.environ.get("GOFR_FAULT_TRIALS", "50"))):
            with evidence.trial() as problems:
                torn_before = torn_log.stat().st_size
                w = subprocess.Popen([sys.executable, "-c", WRITER, str(bdir)], env=env)
                if i % 3 == 0:  # anywhere: start-up, reading, or writing
                    time.sleep(rng.uniform(0.3, 2.5))
                else:  # while a new version is being written: its temp file exists
                    tmp = bdir / f".manifest.json.{w.pid}.tmp"
                    deadline = time.monotonic() + 30
                    while not tmp.exists() and w.poll() is None and time.monotonic() < deadline:
                        pass
                    _spin(rng.uniform(0, 0.015))  # writing and fsyncing 4 MB takes ~15 ms here
                assert w.poll() is None, "the writer died on its own"
                w.send_signal(signal.SIGKILL)
                w.wait()
                temps = list(bdir.glob(".manifest.json.*.tmp"))
                mid_write += bool(temps)  # killed while the new version was being written
                for p in temps:  # (a killed write leaves its temp file; nothing removes it yet)
                    p.unlink()
                try:
                    n = _whole((bdir / "manifest.json").read_bytes())
                except Exception as e:  # noqa: BLE001
                    problems.append(f"manifest not whole after the kill: {e!r}"[:300])
                else:
                    if n < last:
                        problems.append(f"the manifest went back from {last} to {n} entries")
                    last = n
                with open(torn_log) as f:
                    f.seek(torn_before)
                    problems += [f"torn read: {line.strip()}" for line in f]
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=60)
    reads = int(out.strip() or 0)
    torn = len(torn_log.read_text().splitlines())
    evidence.require(last > 10_000, "the writer never completed an update: the kills tested little")
    evidence.require(reads >= evidence.trials, f"only {reads} concurrent reads")
    evidence.require(
        mid_write >= evidence.trials // 5, f"only {mid_write} kills landed while a manifest was being written"
    )
    evidence.publish(
        f"{mid_write} kills landed while a new manifest was being written; {last - 10_000} updates "
        f"completed; {reads} whole reads by a concurrent process, {torn} torn"
    )


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _entry(i: int) -> dict[str, Any]:
    return {
        "project": "plot",
        "filename": f"f{i:06d}",
        "path": f"daily/f{i:06d}",
        "tier": "daily",
        "created": "2026-01-01T02:00:00+00:00",
        "sha256": "0" * 64,
        "pad": "x" * 200,
    }
