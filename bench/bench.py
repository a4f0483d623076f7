"""make bench: measurements that are not tests. Prints markdown tables and writes them to
bench/results/.

    python bench/bench.py [--only sqlite] [--seconds N] [--db-mb N]

sqlite: the worst commit latency of a real SQLite writer (WAL and rollback-journal mode) without a
backup running, and while `gofr-backup now` runs back to back against the same database.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WRITER = ROOT / "tests" / "helpers" / "sqlite_writer.py"


def _env(data: Path, backups: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOFR_")}
    env.update(
        {
            "GOFR_PROJECT": "bench",
            "GOFR_BENCH_BACKUP_DATA_DIR": str(data),
            "GOFR_BENCH_BACKUP_DIR": str(backups),
            "PYTHONPATH": str(ROOT / "src"),
        }
    )
    env.update({f"GOFR_BENCH_BACKUP_{k}": v for k, v in extra.items()})
    return env


def _writer(db: Path, mode: str, mb: int, stats: Path) -> subprocess.Popen[bytes]:
    ready = Path(str(stats) + ".ready")
    ready.unlink(missing_ok=True)
    p = subprocess.Popen([sys.executable, str(WRITER), str(db), mode, str(mb), str(stats)])
    while not ready.exists():
        if p.poll() is not None:
            raise SystemExit("the SQLite writer died")
        time.sleep(0.05)
    return p


def _stop(p: subprocess.Popen[bytes], stats: Path) -> dict[str, float]:
    p.send_signal(signal.SIGTERM)
    p.wait(60)
    d = json.loads(stats.read_text())
    return {k: d[k] for k in ("commits", "max_ms", "p99_ms", "median_ms")}


def bench_sqlite(seconds: float, db_mb: int) -> str:
    rows = []
    with tempfile.TemporaryDirectory(prefix="gofr-bench-") as tmp:
        t = Path(tmp)
        for mode in ("wal", "delete"):
            data = t / mode / "data"
            (data / "db").mkdir(parents=True)
            db, stats = data / "db" / "app.db", t / mode / "stats.json"
            env = _env(data, t / mode / "backups", PATHS="db:db", COMPRESSION="zstd", COMPRESSION_LEVEL="1")
            # without a backup
            w = _writer(db, mode, db_mb, stats)
            time.sleep(seconds)
            idle = _stop(w, stats)
            # with backups running back to back
            w = _writer(db, mode, db_mb, stats)
            t0, runs, backup_s = time.monotonic(), 0, []
            while time.monotonic() - t0 < seconds or runs == 0:
                b0 = time.monotonic()
                r = subprocess.run(
                    [sys.executable, "-m", "gofr_common.backup", "now"],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if r.returncode != 0:
                    raise SystemExit(r.stderr)
                backup_s.append(time.monotonic() - b0)
                runs += 1
                shutil.rmtree(t / mode / "backups" / "daily")
            busy = _stop(w, stats)
            size = db.stat().st_size / 1e6
            rows.append(
                f"| {mode} | {size:.0f} MB | {idle['commits']} | {idle['median_ms']:.2f} | "
                f"{idle['p99_ms']:.2f} | {idle['max_ms']:.1f} | {runs} × {sum(backup_s) / runs:.1f} s | "
                f"{busy['commits']} | {busy['median_ms']:.2f} | {busy['p99_ms']:.2f} | "
                f"{busy['max_ms']:.1f} |"
            )
    head = (
        "| journal mode | db size | commits (no backup) | median ms | p99 ms | max ms | backups during | "
        "commits (backing up) | median ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    return (
        f"### SQLite writer commit latency, {seconds:g} s each, with and without backups\n\n{head}\n"
        + "\n".join(rows)
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="sqlite")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--db-mb", type=int, default=100)
    a = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    parts = []
    if "sqlite" in a.only.split(","):
        parts.append(bench_sqlite(a.seconds, a.db_mb))
    text = "\n\n".join(parts) + "\n"
    (RESULTS / "sqlite-latency.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
