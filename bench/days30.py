"""30 scheduled days of the bench set, backed up three ways side by side (issue 17's evidence):

* full:        writer.write_archive every day (what MODE=full does);
* incremental: incremental.write_chained every day, a full on day 1, then incrementals, each over
               load_snapshot() of the day before's archive (FULL_EVERY longer than the run);
* restic:      `restic backup` every day into a local repository (if restic is installed).

Day 1 backs up the bench set as generated (bench/dataset.py, copied to a scratch dir); before each
later day, 1% of the files change (fixed seed): modified in place (logs get lines appended, JSON
documents and blobs are rewritten, the SQLite database gets rows updated), new files added, files
deleted, files renamed. New content is like the set's, so it compresses alike.

Reports per arm: storage after the last day (ours: archives + .sha256 + .snap; restic: its
repository directory), each day's backup wall time and off-site bytes (ours: the new archive and
its .sha256, what `sync` uploads; restic: the repository's growth), and the restore time of the
last day (full: `tar -xf` of that day's archive; incremental: GNU tar alone, `tar
--listed-incremental=/dev/null -xf` over every archive of the chain in order; restic: `restic
restore latest`), and our own restores of both (restore.restore of the full, restore.restore_chain
of the chain: what `gofr-backup restore NAME --target DIR` runs, sha256 pre-check and per-member
BLAKE3 included). Each restored tree is compared with the last day's source tree (type, mode,
content of every path; SQLite databases by their rows): a wrong restore raises SystemExit.

    PYTHONPATH=src python bench/days30.py [--mb 1170] [--days 30] [--churn 0.01] [--codec zstd]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from dataset import generate, stats  # noqa: E402

from gofr_common.backup.config import BackupConfig  # noqa: E402
from gofr_common.backup.incremental import load_snapshot, snapshot_path, write_chained  # noqa: E402
from gofr_common.backup.restore import Link, RestoreRequest, restore_chain  # noqa: E402
from gofr_common.backup.restore import restore as restore_archive  # noqa: E402
from gofr_common.backup.writer import write_archive  # noqa: E402

TARGETS = {"wall": 0.1, "size": 0.05, "storage": 1.5, "restore": 1.3}
RESTORE_REPS = 3  # our two restores of the last day: each this many times, the median


# -- the days ------------------------------------------------------------------------------------------
def _files(root: Path) -> list[Path]:
    return sorted(Path(dp) / f for dp, _, fns in os.walk(root) for f in fns)


def _log_lines(rnd: random.Random, n: int) -> bytes:
    words = [f"{w}{i}" for i in range(400) for w in ("req", "user", "doc", "plot", "ms", "ok", "GET", "POST")]
    return b"".join(
        f"2026-12-{rnd.randint(1, 28):02d}T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:00Z INFO "
        f"{' '.join(rnd.choices(words, k=rnd.randint(6, 14)))} id={rnd.getrandbits(48):x}\n".encode()
        for _ in range(n)
    )


def _json_doc(rnd: random.Random, i: int) -> bytes:
    return json.dumps(
        {
            "id": i,
            "title": " ".join(f"doc{rnd.randrange(400)}" for _ in range(8)),
            "series": [rnd.random() for _ in range(rnd.randint(90, 190))],
        }
    ).encode()


def _content_like(p: Path, rnd: random.Random) -> bytes:
    """New content of the same kind (and about the size) as ``p``'s."""
    if p.suffix == ".log":
        return _log_lines(rnd, max(1, p.stat().st_size // 110))
    if p.suffix == ".json":
        return _json_doc(rnd, rnd.randrange(10**7))
    return rnd.randbytes(p.stat().st_size or 1024)


def churn(root: Path, rnd: random.Random, frac: float, day: int, db_daily: bool = False) -> dict[str, int]:
    """Change ``frac`` of the files under ``root``: 55% modified in place, 15% new, 15% deleted,
    15% renamed (the SQLite database is only ever modified). ``db_daily``: the database is left out
    of the draw and gets rows updated every day (as an application's database would)."""
    files = _files(root)
    n = max(1, round(len(files) * frac))
    if db_daily:
        dbs = [p for p in files if p.suffix == ".sqlite3"]
        picked = rnd.sample([p for p in files if p.suffix != ".sqlite3"], n) + dbs
    else:
        picked = rnd.sample(files, n)
    done = {"modified": 0, "added": 0, "deleted": 0, "renamed": 0}
    for i, p in enumerate(picked):
        op = rnd.random()
        if p.suffix == ".sqlite3" or op < 0.55:
            if p.suffix == ".sqlite3":
                c = sqlite3.connect(p)
                top = c.execute("SELECT max(id) FROM emb").fetchone()[0]
                rows = [(rnd.randbytes(1024), rnd.randrange(top + 1)) for _ in range(200)]
                c.executemany("UPDATE emb SET vec = ? WHERE id = ?", rows)
                c.commit()
                c.close()
            elif p.suffix == ".log":
                with open(p, "ab") as f:
                    f.write(_log_lines(rnd, rnd.randint(200, 2000)))
            else:
                p.write_bytes(_content_like(p, rnd))
            done["modified"] += 1
        elif op < 0.70:
            new = p.with_name(f"new-d{day:02d}-{i:05d}{p.suffix}")
            new.write_bytes(_content_like(p, rnd))
            done["added"] += 1
        elif op < 0.85:
            p.unlink()
            done["deleted"] += 1
        else:
            # to another directory of the same kind when there is one (docs/000 -> docs/007)
            dirs = sorted(d for d in p.parent.parent.iterdir() if d.is_dir()) if p.suffix == ".json" else []
            dest = rnd.choice(dirs) if dirs else p.parent
            p.rename(dest / f"ren-d{day:02d}-{i:05d}{p.suffix}")
            done["renamed"] += 1
    return done


# -- comparing trees -----------------------------------------------------------------------------------
def _sqlite_digest(p: Path) -> str:
    h = hashlib.sha256()
    c = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
    try:
        for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
            h.update(name.encode())
            for row in c.execute(f'SELECT * FROM "{name}" ORDER BY rowid'):
                h.update(repr(row).encode())
    finally:
        c.close()
    return "rows:" + h.hexdigest()


def digest(root: Path) -> dict[str, tuple[str, int, str]]:
    """path -> (type, permission bits, content hash or link target) for everything under ``root``,
    the archives' own ``.gofr-backup*`` members at the top left out."""
    out: dict[str, tuple[str, int, str]] = {}
    for dp, dns, fns in os.walk(root):
        rel_dir = os.path.relpath(dp, root)
        for name in dns + fns:
            p = Path(dp) / name
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel_dir == "." and name.startswith(".gofr-backup"):
                continue
            st = p.lstat()
            mode = st.st_mode & 0o7777
            if p.is_symlink():
                out[rel] = ("l", mode, os.readlink(p))
            elif p.is_dir():
                out[rel] = ("d", mode, "")
            elif p.suffix == ".sqlite3":
                out[rel] = ("f", mode, _sqlite_digest(p))
            else:
                h = hashlib.blake2b(digest_size=16)
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                out[rel] = ("f", mode, h.hexdigest())
    return out


def check_same(arm: str, got: dict[str, Any], want: dict[str, Any]) -> None:
    if got == want:
        return
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    differ = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    raise SystemExit(
        f"days30: the {arm} restore of the last day is WRONG: {len(missing)} missing "
        f"{missing[:5]}, {len(extra)} extra {extra[:5]}, {len(differ)} different {differ[:5]}"
    )


# -- the arms -----------------------------------------------------------------------------------------
def _config(data: Path, backups: Path, codec: str, level: int) -> BackupConfig:
    env = {
        "GOFR_PROJECT": "bench",
        "GOFR_BENCH_BACKUP_DATA_DIR": str(data),
        "GOFR_BENCH_BACKUP_DIR": str(backups),
        "GOFR_BENCH_BACKUP_PATHS": "logs:logs,storage:storage,db:db",
        "GOFR_BENCH_BACKUP_COMPRESSION": codec,
        "GOFR_BENCH_BACKUP_COMPRESSION_LEVEL": str(level),
        "GOFR_BENCH_BACKUP_SPACE_MARGIN": "1.0",
        "GOFR_BACKUP_ALLOW_ROOT": "true",
    }
    return BackupConfig.from_env(env=env)


def _size(p: Path) -> int:
    return p.stat().st_size if p.exists() else 0


def _du(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _sh(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    t0 = time.monotonic()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"days30: failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return time.monotonic() - t0


def _rm(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)


def run(
    mb: int,
    days: int,
    frac: float,
    codec: str,
    level: int,
    seed: int = 1,
    keep: Path | None = None,
    db_daily: bool = False,
) -> str:
    src = generate(ROOT / "bench" / "data" / f"set-{mb}", mb)
    work = Path(tempfile.mkdtemp(prefix="gofr-bench-days30-", dir=keep))
    try:
        return _run(src, work, days, frac, codec, level, seed, db_daily)
    finally:
        _rm(work)


def _run(
    src: Path, work: Path, days: int, frac: float, codec: str, level: int, seed: int, db_daily: bool
) -> str:
    load0 = os.getloadavg()[0]
    data = work / "data"
    shutil.copytree(src, data, symlinks=True)
    (data / ".gofr-bench-dataset.json").unlink()
    nfiles, nbytes = stats(data)
    rnd = random.Random(seed)
    full_cfg = _config(data, work / "full", codec, level)
    inc_cfg = _config(data, work / "inc", codec, level)
    restic = shutil.which("restic")
    repo = work / "restic"
    renv = {
        **os.environ,
        "RESTIC_PASSWORD": "bench",
        "RESTIC_REPOSITORY": str(repo),
        "RESTIC_CACHE_DIR": str(work / "restic-cache"),
    }
    if restic:
        _sh([restic, "init", "-q"], renv)
    t0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    full_storage = 0
    last_full: Path | None = None
    chain: list[Path] = []
    links: list[Link] = []
    prev = None
    changes = {"modified": 0, "added": 0, "deleted": 0, "renamed": 0}
    for day in range(1, days + 1):
        if day > 1:
            for k, v in churn(data, rnd, frac, day, db_daily).items():
                changes[k] += v
        when = t0 + timedelta(days=day - 1)
        row: dict[str, Any] = {"day": day}
        arms = ["full", "inc", "restic"] if restic else ["full", "inc"]
        k = day % len(arms)  # a different arm goes first each day: load on the machine hits all alike
        for arm in arms[k:] + arms[:k]:
            if arm == "full":
                b0 = time.monotonic()
                f = write_archive(full_cfg, "daily", when)
                row["full_s"] = time.monotonic() - b0
                sha = Path(str(f.path) + ".sha256")
                row["full_b"] = f.size_bytes
                row["full_off"] = f.size_bytes + _size(sha)
                full_storage += row["full_off"]
                if last_full is not None:  # its bytes are counted; the disk is not needed to hold them
                    last_full.unlink()
                    Path(str(last_full) + ".sha256").unlink()
                last_full = f.path
            elif arm == "inc":
                b0 = time.monotonic()
                base = load_snapshot(prev.path, prev.sha256) if prev is not None else None
                c = write_chained(inc_cfg, "daily", when, base)
                row["inc_s"] = time.monotonic() - b0
                row["inc_b"] = c.size_bytes
                row["inc_kind"] = c.end.get("kind", "?")
                row["inc_off"] = c.size_bytes + _size(Path(str(c.path) + ".sha256"))
                row["inc_snap"] = _size(snapshot_path(c.path))
                chain.append(c.path)
                links.append(Link(c.path, c.sha256))
                prev = c
            else:
                before = _du(repo)
                assert restic
                row["restic_s"] = _sh([restic, "backup", "-q", "--host", "bench", "."], renv, cwd=data)
                row["restic_off"] = _du(repo) - before
        rows.append(row)
        print(
            f"days30: day {day:2d}: full {row['full_s']:6.2f} s {row['full_b'] / 1e6:8.1f} MB | "
            f"{row['inc_kind']:11s} {row['inc_s']:6.2f} s {row['inc_b'] / 1e6:8.2f} MB"
            + (f" | restic {row['restic_s']:6.2f} s +{row['restic_off'] / 1e6:.2f} MB" if restic else ""),
            flush=True,
        )
    inc_storage = sum(_size(p) + _size(Path(str(p) + ".sha256")) + _size(snapshot_path(p)) for p in chain)
    restic_storage = _du(repo) if restic else 0

    # restores of the last day, each into an empty directory on the same disk as the data
    want = digest(data)
    subprocess.run(["sync"])
    assert last_full is not None
    restore: dict[str, float] = {}
    tgt = work / "restore"

    def timed(arm: str, cmds: list[list[str]], env: dict[str, str] | None = None, sub: str = "") -> None:
        _rm(tgt)
        tgt.mkdir()
        subprocess.run(["sync"])
        r0 = time.monotonic()
        for cmd in cmds:
            _sh(cmd, env)
        subprocess.run(["sync", "-f", str(tgt)])
        restore[arm] = time.monotonic() - r0
        check_same(arm, digest(tgt / sub if sub else tgt), want)
        print(f"days30: restore of day {days} ({arm}): {restore[arm]:.2f} s, tree equal", flush=True)

    timed("full", [["tar", "-C", str(tgt), "-xf", str(last_full)]])
    timed("inc", [["tar", "--listed-incremental=/dev/null", "-C", str(tgt), "-xf", str(p)] for p in chain])

    # our own restores: restore.restore of the full, restore.restore_chain of the chain (what
    # `gofr-backup restore NAME --target DIR` runs: every archive's sha256 checked, each verified
    # member by member while extracted into one staging, then the swap), timed the same way
    # file creation time on this kind of disk swings 2x from one run to the next (what the
    # previous run's deletes left behind), so these two are run RESTORE_REPS times each,
    # alternating which goes first, and the median is reported
    full_sha = Path(str(last_full) + ".sha256").read_text().split()[0]
    ours = {
        "ours_full": lambda: restore_archive(full_cfg, last_full, RestoreRequest(target=tgt), full_sha),
        "ours": lambda: restore_chain(inc_cfg, links, RestoreRequest(target=tgt)),
    }
    times: dict[str, list[float]] = {arm: [] for arm in ours}
    for rep in range(RESTORE_REPS):
        for arm in sorted(ours, reverse=rep % 2 == 1):
            _rm(tgt)
            subprocess.run(["sync"])
            time.sleep(2)
            r0 = time.monotonic()
            ours[arm]()
            subprocess.run(["sync", "-f", str(tgt)])
            times[arm].append(time.monotonic() - r0)
            check_same(arm, digest(tgt), want)
            print(f"days30: restore of day {days} ({arm}): {times[arm][-1]:.2f} s, tree equal", flush=True)
    for arm in ours:
        restore[arm] = statistics.median(times[arm])
    if restic:
        timed("restic", [[restic, "restore", "-q", "latest", "--target", str(tgt)]], renv)
    _rm(tgt)
    return report(
        rows,
        nfiles,
        nbytes,
        days,
        frac,
        codec,
        level,
        changes,
        full_storage,
        inc_storage,
        restic_storage,
        restore,
        bool(restic),
        db_daily,
        (load0, os.getloadavg()[0]),
    )


# -- the report -----------------------------------------------------------------------------------------
def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}" if n >= 10e6 else f"{n / 1e6:.3f}"


def _met(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def report(
    rows: list[dict[str, Any]],
    nfiles: int,
    nbytes: int,
    days: int,
    frac: float,
    codec: str,
    level: int,
    changes: dict[str, int],
    full_storage: int,
    inc_storage: int,
    restic_storage: int,
    restore: dict[str, float],
    with_restic: bool,
    db_daily: bool = False,
    load: tuple[float, float] = (0.0, 0.0),
) -> str:
    later = [r for r in rows if r["day"] > 1]
    med = statistics.median
    full_wall = med(r["full_s"] for r in rows)
    full_size = med(r["full_b"] for r in rows)
    one_full = rows[-1]["full_off"]
    inc_wall = med(r["inc_s"] for r in later)
    inc_size = med(r["inc_b"] for r in later)
    worst_wall = max(r["inc_s"] for r in later)
    worst_size = max(r["inc_b"] for r in later)
    kinds = {r["inc_kind"] for r in later}
    lines = [
        f"### {days}-day simulation: {days} daily runs, {frac:.0%} of the files changed a day",
        "",
        f"Bench set {nfiles} files, {nbytes / 1e6:,.0f} MB (bench/dataset.py); {codec} -{level}; "
        f"{os.cpu_count()} cores. Over days 2-{days}: {changes['modified']} files modified in place, "
        f"{changes['added']} added, {changes['deleted']} deleted, {changes['renamed']} renamed "
        f"(fixed seed)"
        + (", and the SQLite database (rows updated) every day" if db_daily else "")
        + f". Incremental days 2-{days} were all: {', '.join(sorted(kinds))}. Load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end (a shared machine: times are noisy).",
        "",
        "| | full mode | incremental mode | restic |",
        "|---|---|---|---|",
        f"| storage after {days} days, MB | {_mb(full_storage)} | {_mb(inc_storage)} | "
        + (f"{_mb(restic_storage)} |" if with_restic else "- |"),
        f"| storage vs one full | {full_storage / one_full:.2f}x | {inc_storage / one_full:.2f}x | "
        + (f"{restic_storage / one_full:.2f}x |" if with_restic else "- |"),
        f"| day 1 backup, s | {rows[0]['full_s']:.2f} | {rows[0]['inc_s']:.2f} | "
        + (f"{rows[0]['restic_s']:.2f} |" if with_restic else "- |"),
        f"| median backup, days 2-{days}, s | {med(r['full_s'] for r in later):.2f} | {inc_wall:.2f} | "
        + (f"{med(r['restic_s'] for r in later):.2f} |" if with_restic else "- |"),
        f"| median off-site bytes a day, days 2-{days}, MB | {_mb(med(r['full_off'] for r in later))} | "
        f"{_mb(med(r['inc_off'] for r in later))} | "
        + (f"{_mb(med(r['restic_off'] for r in later))} |" if with_restic else "- |"),
        f"| restore of day {days}, s | {restore['full']:.2f} (tar -xf) | {restore['inc']:.2f} "
        f"(GNU tar alone, {days} archives) | " + (f"{restore['restic']:.2f} |" if with_restic else "- |"),
        f"| restore of day {days} with gofr-backup's restore, s (median of {RESTORE_REPS}, alternating) | "
        f"{restore['ours_full']:.2f} | {restore['ours']:.2f} (restore_chain, {days} archives) | - |",
        "",
        "Targets (incremental mode against full mode):",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| a day's backup ≤ 0.1x a full's wall time | median {inc_wall / full_wall:.3f}x "
        f"({inc_wall:.2f} s / {full_wall:.2f} s); worst day {worst_wall / full_wall:.3f}x | "
        f"{_met(inc_wall <= TARGETS['wall'] * full_wall)} |",
        f"| a day's backup ≤ 0.05x a full's size | median {inc_size / full_size:.4f}x "
        f"({_mb(inc_size)} MB / {_mb(full_size)} MB); worst day {worst_size / full_size:.4f}x | "
        f"{_met(inc_size <= TARGETS['size'] * full_size)} |",
        f"| {days} days ≤ 1.5x one full in storage | {inc_storage / one_full:.2f}x "
        f"({_mb(inc_storage)} MB, .snap files included / {_mb(one_full)} MB) | "
        f"{_met(inc_storage <= TARGETS['storage'] * one_full)} |",
        f"| restoring day {days} ≤ 1.3x restoring a full | {restore['inc'] / restore['full']:.2f}x "
        f"({restore['inc']:.2f} s / {restore['full']:.2f} s) | "
        f"{_met(restore['inc'] <= TARGETS['restore'] * restore['full'])} (GNU tar alone) |",
        f"| restoring day {days} ≤ 1.3x restoring a full, with our restore | "
        f"{restore['ours'] / restore['ours_full']:.2f}x ({restore['ours']:.2f} s / {restore['ours_full']:.2f} s) | "
        f"{_met(restore['ours'] <= TARGETS['restore'] * restore['ours_full'])} (gofr-backup restore) |",
        "",
        f"Every restore of day {days} was compared with that day's tree (type, mode and content of every "
        "path, SQLite rows) and was equal.",
        "",
        "<details><summary>Each day</summary>",
        "",
        "| day | full s | full MB | incremental | inc s | inc MB | inc .snap MB | "
        + ("restic s | restic +MB |" if with_restic else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|" if with_restic else ""),
    ]
    for r in rows:
        lines.append(
            f"| {r['day']} | {r['full_s']:.2f} | {_mb(r['full_off'])} | {r['inc_kind']} | {r['inc_s']:.2f} | "
            f"{_mb(r['inc_off'])} | {_mb(r['inc_snap'])} | "
            + (f"{r['restic_s']:.2f} | {_mb(r['restic_off'])} |" if with_restic else "")
        )
    lines += ["", "</details>"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1170)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--churn", type=float, default=0.01)
    ap.add_argument("--codec", default="zstd")
    ap.add_argument("--level", type=int, default=3)
    ap.add_argument("--db-daily", action="store_true", help="update the SQLite database every day too")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "days30.md")
    a = ap.parse_args()
    text = run(a.mb, a.days, a.churn, a.codec, a.level, db_daily=a.db_daily)
    a.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
