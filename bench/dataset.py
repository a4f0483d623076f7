"""A deterministic GOFR-like data set: 35% logs, 35% incompressible blobs, 20% small JSON documents,
10% SQLite. At the default 1170 MB it holds about 81k files.

    python bench/dataset.py DIR [--mb 1170] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
from pathlib import Path

MARKER = ".gofr-bench-dataset.json"


def generate(root: Path, mb: int = 1170, seed: int = 1) -> Path:
    spec = {"mb": mb, "seed": seed, "version": 1}
    marker = root / MARKER
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return root
    if root.exists():
        import shutil

        shutil.rmtree(root)
    rnd = random.Random(seed)
    total = mb << 20
    # logs: lines drawn from a pool, so they compress like real logs (about 5-8x)
    words = [f"{w}{i}" for i in range(400) for w in ("req", "user", "doc", "plot", "ms", "ok", "GET", "POST")]
    pool = [
        f"2026-11-{rnd.randint(1, 28):02d}T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:"
        f"{rnd.randint(0, 59):02d}Z INFO {' '.join(rnd.choices(words, k=rnd.randint(6, 14)))} "
        f"id={rnd.getrandbits(48):x}\n".encode()
        for _ in range(60_000)
    ]
    logs = root / "logs"
    logs.mkdir(parents=True)
    left, i = int(total * 0.35), 0
    while left > 0:
        size = min(left, 4 << 20)
        out, n = [], 0
        while n < size:
            line = pool[rnd.randrange(len(pool))]
            out.append(line)
            n += len(line)
        (logs / f"app-{i:03d}.log").write_bytes(b"".join(out))
        left -= n
        i += 1
    # incompressible blobs (rendered images, uploads)
    blobs = root / "storage" / "blobs"
    blobs.mkdir(parents=True)
    left, i = int(total * 0.35), 0
    while left > 0:
        size = min(left, rnd.randint(1 << 20, 8 << 20))
        (blobs / f"blob-{i:04d}.bin").write_bytes(rnd.randbytes(size))
        left -= size
        i += 1
    # small JSON documents
    docs = root / "storage" / "docs"
    left, i = int(total * 0.20), 0
    while left > 0:
        d = docs / f"{i // 500:03d}"
        if i % 500 == 0:
            d.mkdir(parents=True)
        body = json.dumps(
            {
                "id": i,
                "title": " ".join(rnd.choices(words, k=8)),
                "series": [rnd.random() for _ in range(rnd.randint(90, 190))],
            }
        ).encode()
        (d / f"doc-{i:06d}.json").write_bytes(body)
        left -= len(body)
        i += 1
    # SQLite (an index, like gofr-iq's)
    db_dir = root / "db"
    db_dir.mkdir()
    c = sqlite3.connect(db_dir / "index.sqlite3")
    c.execute("CREATE TABLE emb(id INTEGER PRIMARY KEY, doc TEXT, vec BLOB)")
    left, i = int(total * 0.10), 0
    batch = []
    while left > 0:
        vec = rnd.randbytes(1024)
        batch.append((i, " ".join(rnd.choices(words, k=20)), vec))
        left -= 1024 + 150
        i += 1
        if len(batch) == 5000:
            c.executemany("INSERT INTO emb VALUES(?, ?, ?)", batch)
            batch.clear()
    c.executemany("INSERT INTO emb VALUES(?, ?, ?)", batch)
    c.commit()
    c.close()
    marker.write_text(json.dumps(spec))
    return root


def stats(root: Path) -> tuple[int, int]:
    files = size = 0
    for dp, _, fns in os.walk(root):
        for f in fns:
            files += 1
            size += os.path.getsize(os.path.join(dp, f))
    return files, size


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--mb", type=int, default=1170)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    generate(Path(a.dir), a.mb, a.seed)
    files, size = stats(Path(a.dir))
    print(f"{files} files, {size / 1e6:.0f} MB")
