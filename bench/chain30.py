"""30-day estimate for chained archives (issue 17): a bench-like tree (a few thousand files: small
JSON documents, logs, a few blobs), 1% of the files changed per day (modified, added or deleted).
Writes a full every day (writer.write_archive) and a full + 29 incrementals
(incremental.write_chained) side by side and prints the storage of each strategy and the per-day
write time. Small on purpose (about 40 MB by default); nothing heavy.

    PYTHONPATH=src:tests python bench/chain30.py [--files 3000] [--days 30] [--churn 0.01] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gofr_common.backup.config import BackupConfig
from gofr_common.backup.incremental import load_snapshot, snapshot_path, write_chained
from gofr_common.backup.writer import write_archive


def _config(data: Path, backups: Path) -> BackupConfig:
    env = {
        "GOFR_PROJECT": "bench",
        "GOFR_BENCH_BACKUP_DATA_DIR": str(data),
        "GOFR_BENCH_BACKUP_DIR": str(backups),
        "GOFR_BENCH_BACKUP_PATHS": "storage:storage",
        "GOFR_BENCH_BACKUP_COMPRESSION": "zstd",
        "GOFR_BACKUP_ALLOW_ROOT": "true",
    }
    return BackupConfig.from_env(env=env)


def _content(rnd: random.Random, i: int) -> bytes:
    kind = i % 10
    if kind < 6:  # small JSON documents
        return (
            f'{{"id": {i}, "v": {rnd.random()}, "text": "' + "lorem ipsum " * rnd.randint(5, 80) + '"}'
        ).encode()
    if kind < 9:  # logs
        return b"".join(
            b"2026-03-01 INFO request %d took %d ms\n" % (rnd.randint(0, 9999), rnd.randint(1, 500))
            for _ in range(rnd.randint(50, 800))
        )
    return rnd.randbytes(rnd.randint(20_000, 120_000))  # blobs


def _populate(root: Path, files: int, rnd: random.Random) -> list[Path]:
    out = []
    for i in range(files):
        p = root / f"d{i % 37:02d}" / f"s{i % 5}" / f"f{i:06d}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(_content(rnd, i))
        out.append(p)
    return out


def _churn(live: list[Path], rnd: random.Random, churn: float, day: int) -> None:
    n = max(1, int(len(live) * churn))
    for _ in range(n):
        op = rnd.random()
        if op < 0.7:  # modify
            p = rnd.choice(live)
            with open(p, "ab") as f:
                f.write(_content(rnd, rnd.randint(0, 10**6))[:2000])
        elif op < 0.85:  # add
            p = live[0].parent.parent / f"new{day:02d}" / f"n{rnd.randint(0, 10**9)}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(_content(rnd, rnd.randint(0, 10**6)))
            live.append(p)
        elif len(live) > 10:  # delete
            p = live.pop(rnd.randrange(len(live)))
            p.unlink()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--churn", type=float, default=0.01)
    ap.add_argument("--dir", type=Path)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="chain30-", dir=a.dir))
    try:
        rnd = random.Random(1)
        data = work / "data"
        live = _populate(data / "storage", a.files, rnd)
        full_cfg, chain_cfg = _config(data, work / "fulls"), _config(data, work / "chain")
        t0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
        prev = None
        full_bytes = chain_bytes = snap_bytes = 0
        print(
            f"{'day':>3} {'full MB':>9} {'full s':>7} {'chain MB':>9} {'chain s':>8} {'kind':>11} {'stored':>7}"
        )
        for day in range(a.days):
            if day:
                _churn(live, rnd, a.churn, day)
            when = t0 + timedelta(days=day)
            f = write_archive(full_cfg, "daily", when)
            base = load_snapshot(prev.path, prev.sha256) if prev is not None else None
            c = write_chained(chain_cfg, "daily", when, base)
            prev = c
            full_bytes += f.size_bytes
            chain_bytes += c.size_bytes
            snap_bytes += os.path.getsize(snapshot_path(c.path))
            print(
                f"{day:>3} {f.size_bytes / 1e6:>9.2f} {f.duration_s:>7.2f} {c.size_bytes / 1e6:>9.2f} "
                f"{c.duration_s:>8.2f} {c.end['kind']:>11} {c.end['index_entries']:>7}"
            )
        print(f"\n{a.days} days, {a.files} files, {a.churn:.1%} churn/day:")
        print(f"  full every day:        {full_bytes / 1e6:10.1f} MB")
        print(
            f"  full + {a.days - 1} incrementals: {chain_bytes / 1e6:10.1f} MB (+ {snap_bytes / 1e6:.2f} MB of .snap)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
