"""A real SQLite writer process, for tests and the benchmark.

    python sqlite_writer.py DB MODE(wal|delete) PRELOAD_MB STATS_JSON [--interval SECONDS]

Creates DB (if new) with PRELOAD_MB of rows, then commits numbered transactions until SIGTERM.
Each transaction, atomically:
  - inserts seq = N into `log` (so a consistent copy holds exactly 1..N: a committed prefix),
  - sets meta.last = N,
  - moves 1 unit between two random rows of `acct`, spread over the whole file
    (so the sum of acct.v is constant in every consistent state, and a torn copy breaks it).
On SIGTERM it writes {count, max_ms, p99_ms, median_ms, latencies_ms[...]} to STATS_JSON.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import sys
import time

ACCOUNTS = 20_000
TOTAL = ACCOUNTS * 100


def create(db: str, mode: str, preload_mb: int) -> None:
    c = sqlite3.connect(db, isolation_level=None)
    c.execute(f"PRAGMA journal_mode={mode}")
    c.execute("CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, last INTEGER)")
    c.execute("CREATE TABLE IF NOT EXISTS log(seq INTEGER PRIMARY KEY, at REAL)")
    c.execute("CREATE TABLE IF NOT EXISTS acct(id INTEGER PRIMARY KEY, v INTEGER, pad BLOB)")
    if c.execute("SELECT count(*) FROM meta").fetchone()[0] == 0:
        c.execute("BEGIN")
        c.execute("INSERT INTO meta VALUES('last', 0)")
        # accounts interleaved with bulk padding, so the rows sit on pages all over the file
        per = max(1, preload_mb * (1 << 20) // ACCOUNTS)
        rnd = random.Random(1)
        for i in range(ACCOUNTS):
            c.execute("INSERT INTO acct VALUES(?, 100, ?)", (i, rnd.randbytes(64) + bytes(per)))
        c.execute("COMMIT")
    c.close()


def main() -> None:
    db, mode, preload_mb, stats = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    interval = float(sys.argv[sys.argv.index("--interval") + 1]) if "--interval" in sys.argv else 0.0
    create(db, mode, preload_mb)
    c = sqlite3.connect(db, isolation_level=None, timeout=60)
    c.execute("PRAGMA busy_timeout=60000")
    n = c.execute("SELECT last FROM meta").fetchone()[0]
    lat: list[float] = []
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *a: stop.update(now=True))
    rnd = random.Random(os.getpid())
    ready = stats + ".ready"
    open(ready, "w").close()
    while not stop["now"]:
        n += 1
        a, b = rnd.randrange(ACCOUNTS), rnd.randrange(ACCOUNTS)
        t0 = time.perf_counter()
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO log VALUES(?, ?)", (n, time.time()))
        c.execute("UPDATE meta SET last = ?", (n,))
        c.execute("UPDATE acct SET v = v - 1 WHERE id = ?", (a,))
        c.execute("UPDATE acct SET v = v + 1 WHERE id = ?", (b,))
        c.execute("COMMIT")
        lat.append((time.perf_counter() - t0) * 1000)
        if interval:
            time.sleep(interval)
    lat_sorted = sorted(lat) or [0.0]
    out = {
        "count": n,
        "commits": len(lat),
        "max_ms": lat_sorted[-1],
        "p99_ms": lat_sorted[int(len(lat_sorted) * 0.99)],
        "median_ms": lat_sorted[len(lat_sorted) // 2],
        "latencies_ms": lat,
    }
    with open(stats, "w") as f:
        json.dump(out, f)


def live_last(db: str) -> int:
    """meta.last of the live database, read the way any other reader would (busy timeout)."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=60)
    try:
        return int(c.execute("SELECT last FROM meta").fetchone()[0])
    finally:
        c.close()


def check(db: str) -> tuple[bool, str, int]:
    """(consistent, why, N) for a copy of the database."""
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        ic = c.execute("PRAGMA integrity_check").fetchone()[0]
        if ic != "ok":
            return False, f"integrity_check: {ic}", -1
        last = c.execute("SELECT last FROM meta").fetchone()[0]
        n, lo, hi = c.execute("SELECT count(*), min(seq), max(seq) FROM log").fetchone()
        total = c.execute("SELECT sum(v) FROM acct").fetchone()[0]
        c.close()
    except sqlite3.Error as e:
        return False, f"sqlite error: {e}", -1
    if n and (lo, hi) != (1, n):
        return False, f"log is not 1..N: {n} rows from {lo} to {hi}", -1
    if last != n:
        return False, f"meta.last={last} but the log holds {n}", -1
    if total != TOTAL:
        return False, f"sum(acct.v)={total}, expected {TOTAL}: a partial transaction", -1
    return True, "ok", n


if __name__ == "__main__":
    main()
