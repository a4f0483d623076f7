"""make bench: measurements that are not tests. Prints markdown tables and writes them (and a PNG
chart) to bench/results/.

    python bench/bench.py [--only throughput,memory,ops,idle,sqlite,drill,days30] [--mb 1170] [--big-mb 4680]
                          [--runs 3] [--days 30] [--churn 0.01] [--days-mb MB] [--days-codec zstd]

throughput: `gofr-backup now` per codec against the same-format CLI pipelines (each also writing the
            checksum), restic's and borg's first backups; verify and restore against their CLI
            baselines (restore and tar -xzf alternate). Wall (median of --runs), CPU, peak RSS
            (GNU time), output size.
memory:     peak RSS of `now` and `verify` on the --mb set and on the --big-mb set.
ops:        list, prune and status over a manifest of 10,000 archives.
idle:       the service's CPU and RSS while it waits for its next run.
sqlite:     the worst commit latency of a real SQLite writer (WAL and rollback-journal mode)
            without a backup running, and while `gofr-backup now` runs back to back.
drill:      `gofr-backup drill` against `restore --target` of the same gzip archive (alternating,
            on the same disk), the drill's own restore_seconds, and `check-source` with the default
            1% sample, with 100% at the default rate limit and unthrottled.
days30:     30 scheduled days of the --days-mb set (default: --mb), --churn of the files changed a
            day; full mode, incremental mode and restic side by side: storage, each day's wall time
            and off-site bytes, the last day's restore (checked against that day's tree), and
            issue 17's targets met or not (bench/days30.py; also written to results/days30.md).
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


# -- throughput ---------------------------------------------------------------------------------------
def _once(cmd: str, env: dict[str, str] | None, before: str | None) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (KB) of one run of the whole pipeline (GNU time)."""
    if before:
        subprocess.run(before, shell=True, check=True, env=env)
    tf = tempfile.NamedTemporaryFile(delete=False)
    tf.close()
    t0 = time.monotonic()
    r = subprocess.run(
        ["/usr/bin/time", "-o", tf.name, "-f", "%U %S %M", "sh", "-c", cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.monotonic() - t0
    if r.returncode not in (0, 3):
        raise SystemExit(f"failed: {cmd}\n{r.stderr[-2000:]}")
    u, s_, m = Path(tf.name).read_text().split()[-3:]
    os.unlink(tf.name)
    return wall, float(u) + float(s_), int(m)


def _summary(samples: list[tuple[float, float, int]]) -> dict[str, float]:
    walls = sorted(w for w, _, _ in samples)
    cpus = sorted(c for _, c, _ in samples)
    return {
        "wall": walls[len(walls) // 2],
        "cpu": cpus[len(cpus) // 2],
        "rss_mb": max(r for _, _, r in samples) / 1024,
    }


def measure(
    cmd: str, env: dict[str, str] | None = None, runs: int = 3, before: str | None = None
) -> dict[str, float]:
    """Median wall and CPU time, and the highest peak RSS, over ``runs``."""
    return _summary([_once(cmd, env, before) for _ in range(runs)])


def measure_alternating(
    cmds: list[tuple[str, dict[str, str] | None]], runs: int, before: str
) -> list[dict[str, float]]:
    """Like measure, for several commands run in turn (a, b, c, a, b, c, ...), so that a disk that
    slows down or speeds up during the runs affects them alike."""
    samples: list[list[tuple[float, float, int]]] = [[] for _ in cmds]
    for _ in range(runs):
        for i, (cmd, env) in enumerate(cmds):
            samples[i].append(_once(cmd, env, before))
    return [_summary(x) for x in samples]


def _tmpfs(path: Path, mb: int) -> bool:
    """Mount a tmpfs at ``path`` (root only): restore timed without the disk's noise."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(path)]).returncode == 0


def bench_throughput(mb: int, runs: int, slow_mb: int) -> tuple[str, list[tuple[str, float]]]:
    sys.path.insert(0, str(ROOT / "bench"))
    from dataset import generate, stats

    data = generate(ROOT / "bench" / "data" / f"set-{mb}", mb)
    slow = generate(ROOT / "bench" / "data" / f"set-{slow_mb}", slow_mb)  # for bzip2 and xz
    nfiles, nbytes = stats(data)
    sfiles, sbytes = stats(slow)
    work = Path(tempfile.mkdtemp(prefix="gofr-bench-"))
    rows: list[tuple[str, str, dict[str, float], int | None, str]] = []  # group, name, m, size, vs
    gofr = f"{sys.executable} -m gofr_common.backup"
    tar = f"tar -C {data} -c ."
    star = f"tar -C {slow} -c ."
    out = work / "out"
    pipelines = {
        "gzip": (f"{tar} | gzip -6 | tee {out} | sha256sum", "GNU tar | gzip -6"),
        "pigz": (f"{tar} | pigz -6 -p 2 | tee {out} | sha256sum", "tar | pigz -6 -p 2"),
        "zstd": (f"{tar} | zstd -q -3 -T2 | tee {out} | sha256sum", "tar | zstd -3 -T2"),
        "bzip2": (f"{star} | bzip2 -6 | tee {out} | sha256sum", f"tar | bzip2 -6 ({slow_mb} MB set)"),
        "xz": (f"{star} | xz -6 | tee {out} | sha256sum", f"tar | xz -6 ({slow_mb} MB set)"),
        "none": (f"{tar} | tee {out} | sha256sum", "tar | sha256sum"),
    }
    base_wall = {}
    for codec, level in (("gzip", 6), ("zstd", 3), ("bzip2", 6), ("xz", 6), ("none", 6)):
        src = slow if codec in ("bzip2", "xz") else data
        n_runs = 1 if codec == "xz" else runs  # one xz run of the small set takes ~90 s
        env = _env(
            src,
            work / "b",
            PATHS="logs:logs,storage:storage,db:db",
            COMPRESSION=codec,
            COMPRESSION_LEVEL=str(level),
            VERIFY_AFTER_BACKUP="false",
            SPACE_MARGIN="1.0",
        )
        env["GOFR_BACKUP_LOG_FORMAT"] = "json"
        cli, label = pipelines[codec]
        m = measure(cli, runs=n_runs)
        base_wall[codec] = m["wall"]
        rows.append((codec, label, m, out.stat().st_size, "1.00x"))
        if codec == "gzip" and shutil.which("pigz"):
            cli2, label2 = pipelines["pigz"]
            m2 = measure(cli2, runs=runs)
            rows.append((codec, label2, m2, out.stat().st_size, f"{m2['wall'] / m['wall']:.2f}x"))
        clean = f"rm -rf {work / 'b'}"
        mo = measure(f"{gofr} now", env=env, runs=n_runs, before=clean)
        archive = next(p for p in (work / "b" / "daily").glob("*.tar*") if not p.name.endswith(".sha256"))
        rows.append(
            (
                codec,
                f"gofr-backup now ({codec} {level})" + (f" ({slow_mb} MB set)" if src is slow else ""),
                mo,
                archive.stat().st_size,
                f"{mo['wall'] / m['wall']:.2f}x",
            )
        )
        if codec == "gzip":
            gz = archive
            mv = measure(f"sha256sum {gz} >/dev/null && gzip -dc {gz} > /dev/null", runs=runs)
            rows.append(("verify", "sha256sum X && gzip -dc X", mv, None, "1.00x"))
            mov = measure(f"{gofr} verify {gz.name}", env=env, runs=runs)
            rows.append(
                ("verify", "gofr-backup verify (gzip)", mov, None, f"{mov['wall'] / mv['wall']:.2f}x")
            )
            # restore: on the disk (noisy in a VM, so more runs, alternating), and on a tmpfs,
            # which leaves only the CPU work; tar -xzf && sync -f is the like-for-like durable baseline
            r_runs = max(runs, 5)
            tgt = work / "restore"
            mr, mrs, mor = measure_alternating(
                [
                    (f"mkdir {tgt} && tar -xzf {gz} -C {tgt}", None),
                    (f"mkdir {tgt} && tar -xzf {gz} -C {tgt} && sync -f {tgt}", None),
                    (f"{gofr} restore {gz.name} --target {tgt} --yes", env),
                ],
                runs=r_runs,
                before=f"rm -rf {tgt} && sync && sleep 1",
            )
            rows.append(("restore", f"tar -xzf X (empty dir; median of {r_runs})", mr, None, "1.00x"))
            rows.append(("restore", "tar -xzf X && sync -f (durable)", mrs, None, _ratio(mrs, mr)))
            rows.append(("restore", "gofr-backup restore --target (syncfs)", mor, None, _ratio(mor, mr)))
            mnt = work / "tmpfs"
            if _tmpfs(mnt, 2 * nbytes // (1 << 20) + 256):
                tgt = mnt / "restore"
                try:
                    mt, mot = measure_alternating(
                        [
                            (f"mkdir {tgt} && tar -xzf {gz} -C {tgt}", None),
                            (f"{gofr} restore {gz.name} --target {tgt} --yes", env),
                        ],
                        runs=runs,
                        before=f"rm -rf {tgt}",
                    )
                finally:
                    subprocess.run(["umount", str(mnt)])
                rows.append(("restore", "tar -xzf X (into tmpfs)", mt, None, "1.00x"))
                rows.append(("restore", "gofr-backup restore (into tmpfs)", mot, None, _ratio(mot, mt)))
            shutil.copy(gz, work / "keep.tar.gz")
    if shutil.which("restic"):
        repo = work / "restic"
        e = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_REPOSITORY": str(repo)}
        m = measure(f"restic init -q && restic backup -q {data}", env=e, runs=runs, before=f"rm -rf {repo}")
        rows.append(("peers", "restic first backup", m, _du(repo), f"{m['wall'] / base_wall['gzip']:.2f}x"))
    if shutil.which("borg"):
        repo = work / "borg"
        e = {**os.environ, "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes"}
        m = measure(
            f"borg init -e none {repo} && borg create --compression lz4 {repo}::a {data}",
            env=e,
            runs=runs,
            before=f"rm -rf {repo}",
        )
        rows.append(
            ("peers", "borg 1.2 first backup (lz4)", m, _du(repo), f"{m['wall'] / base_wall['gzip']:.2f}x")
        )
    shutil.rmtree(work, ignore_errors=True)
    head = (
        f"### Throughput: {nfiles} files, {nbytes / 1e6:.0f} MB, median of {runs}; bzip2 and xz on {sfiles} files, "
        f"{sbytes / 1e6:.0f} MB (xz: one run); {os.cpu_count()} cores, warm cache\n\n"
        "| group | command | wall s | CPU s | peak RSS MB | output MB | wall vs baseline |\n"
        "|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {g} | {n} | {m['wall']:.2f} | {m['cpu']:.1f} | {m['rss_mb']:.0f} | "
        f"{(sz / 1e6) if sz else 0:.0f} | {vs} |"
        for g, n, m, sz, vs in rows
    ]
    note = (
        "\nBaselines: each CLI pipeline of the same format writes its checksum too (`| tee X | sha256sum`). "
        "`gofr-backup now` runs with VERIFY_AFTER_BACKUP=false here (verify is timed on its own); "
        "peers are compared with the GNU gzip pipeline."
    )
    chart = [(n, m["wall"]) for g, n, m, sz, vs in rows]
    return head + "\n" + "\n".join(lines) + "\n" + note, chart


def _ratio(m: dict[str, float], base: dict[str, float]) -> str:
    return f"{m['wall'] / base['wall']:.2f}x"


def _du(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def write_chart(chart: list[tuple[str, float]], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "(no chart: matplotlib is not installed)"
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(chart) + 1))
    names = [n for n, _ in chart][::-1]
    walls = [w for _, w in chart][::-1]
    ax.barh(names, walls, color=["#2a7" if n.startswith("gofr") else "#999" for n in names])
    ax.set_xlabel("wall seconds (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return f"![throughput]({path.name})"


# -- memory: the same backup of a set and of one four times its size --------------------------------------
def bench_memory(mb: int, big_mb: int) -> str:
    """Peak RSS of `now` (per codec) and `verify` on the --mb set and on a --big-mb set: memory
    must not grow with the data (the file list is not kept)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from dataset import generate, stats

    sets = [generate(ROOT / "bench" / "data" / f"set-{m}", m) for m in (mb, big_mb)]
    sizes = [stats(d) for d in sets]
    work = Path(tempfile.mkdtemp(prefix="gofr-bench-mem-"))
    gofr = f"{sys.executable} -m gofr_common.backup"
    rows = []
    for codec in ("gzip", "zstd", "none"):
        peaks = []
        for d in sets:
            env = _env(
                d,
                work / "b",
                PATHS="logs:logs,storage:storage,db:db",
                COMPRESSION=codec,
                VERIFY_AFTER_BACKUP="false",
                SPACE_MARGIN="1.0",
            )
            m = measure(f"{gofr} now", env=env, runs=1, before=f"rm -rf {work / 'b'}")
            peaks.append(m["rss_mb"])
            if codec == "gzip":
                archive = next(p for p in (work / "b" / "daily").glob("*.tar.gz"))
                peaks.append(measure(f"{gofr} verify {archive.name}", env=env, runs=1)["rss_mb"])
        if codec == "gzip":
            rows.append(("now (gzip 6)", peaks[0], peaks[2]))
            rows.append(("verify (gzip)", peaks[1], peaks[3]))
        else:
            rows.append((f"now ({codec})", peaks[0], peaks[1]))
    shutil.rmtree(work, ignore_errors=True)
    (f1, b1), (f2, b2) = sizes
    return (
        f"### Peak RSS on a {b1 / 1e6:,.0f} MB set ({f1} files) and a {b2 / 1e6:,.0f} MB set ({f2} files)\n\n"
        "| command | peak RSS MB, small set | peak RSS MB, large set | large vs small |\n|---|---|---|---|\n"
        + "\n".join(f"| {n} | {a:.0f} | {b:.0f} | {b / a:.2f}x |" for n, a, b in rows)
    )


# -- list / prune / status at 10,000 archives -----------------------------------------------------------
def bench_ops(runs: int) -> str:
    work = Path(tempfile.mkdtemp(prefix="gofr-bench-ops-"))
    (work / "data" / "s").mkdir(parents=True)
    (work / "data" / "s" / "f").write_text("x")
    b = work / "b"
    (b / "daily").mkdir(parents=True)
    from datetime import datetime, timedelta

    now = datetime.now().astimezone()
    entries = []
    for i in range(10_000):
        t = now - timedelta(hours=i)
        name = f"gofr-bench_daily_{t:%Y%m%d_%H%M%S}.tar.gz"
        (b / "daily" / name).touch()
        entries.append(
            {
                "project": "bench",
                "filename": name,
                "path": f"daily/{name}",
                "tier": "daily",
                "created": t.isoformat(),
                "size_bytes": 1000,
                "sha256": "0" * 64,
                "compression": "gzip",
                "verified": True,
                "verified_at": None,
                "verify_error": None,
                "file_count": 1,
                "source_bytes": 1,
                "duration_s": 0.1,
                "warnings": [],
                "complete": True,
                "trigger": "schedule",
            }
        )
    (b / "manifest.json").write_text(json.dumps({"format": 1, "backups": entries}))
    env = _env(work / "data", b, PATHS="s:s", RETENTION_DAYS="100000", MAX_COUNT="100000")
    gofr = f"{sys.executable} -m gofr_common.backup"
    rows = []
    for what, cmd in (
        ("list", "list"),
        ("list --json", "list --json"),
        ("prune (nothing to delete)", "prune"),
        ("status (HEALTHCHECK)", "status"),
    ):
        m = measure(f"{gofr} {cmd}", env=env, runs=runs)
        rows.append(f"| {what} | {m['wall']:.2f} | {m['rss_mb']:.0f} |")
    shutil.rmtree(work, ignore_errors=True)
    return (
        "### Operations over a manifest of 10,000 archives\n\n| command | wall s | peak RSS MB |\n|---|---|---|\n"
        + "\n".join(rows)
    )


# -- restore drill and source spot check ------------------------------------------------------------------
def bench_drill(mb: int, runs: int) -> str:
    sys.path.insert(0, str(ROOT / "bench"))
    from dataset import generate, stats

    data = generate(ROOT / "bench" / "data" / f"set-{mb}", mb)
    nfiles, nbytes = stats(data)
    work = Path(tempfile.mkdtemp(prefix="gofr-bench-drill-"))
    (work / "scratch").mkdir()  # a DRILL_DIR must exist
    gofr = f"{sys.executable} -m gofr_common.backup"
    env = _env(
        data,
        work / "b",
        PATHS="logs:logs,storage:storage,db:db",
        SPACE_MARGIN="1.0",
        DRILL_DIR=str(work / "scratch"),
        SPOT_CHECK_AFTER_BACKUP="false",
        REPORT_FILE="off",
    )
    env["GOFR_BACKUP_LOG_FORMAT"] = "json"
    r = subprocess.run(f"{gofr} now", shell=True, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-2000:])
    gz = next((work / "b" / "daily").glob("*.tar.gz"))
    tgt = work / "restore"
    r_runs = max(runs, 3)
    mr, md = measure_alternating(
        [
            (f"{gofr} restore {gz.name} --target {tgt} --yes", env),
            (f"{gofr} drill {gz.name} --json > {work / 'drill.json'}", env),
        ],
        runs=r_runs,
        before=f"rm -rf {tgt} && sync && sleep 1",
    )
    d = json.loads((work / "drill.json").read_text())
    rows = [
        ("restore --target (gzip, on disk)", mr, ""),
        (
            "drill (restore + hash every file + SQLite + cleanup)",
            md,
            f"{md['wall'] / mr['wall']:.2f}x of restore",
        ),
    ]
    checks = d["checks"]
    note = (
        f"the drill's own restore_seconds (last run): {d['restore_seconds']:.2f} s; it hashed "
        f"{checks.get('hashes')} files and checked {checks.get('sqlite')} SQLite database(s)"
    )
    for label, args, rate in (
        ("check-source (default 1% sample, 20 MB/s)", "", "20"),
        ("check-source --sample 100 (20 MB/s)", "--sample 100", "20"),
        ("check-source --sample 100 (unthrottled)", "--sample 100", "100000"),
    ):
        e2 = {**env, "GOFR_BENCH_BACKUP_SPOT_CHECK_RATE": rate}
        m = measure(f"{gofr} check-source {gz.name} {args}", env=e2, runs=1)
        rows.append((label, m, ""))
    shutil.rmtree(work, ignore_errors=True)
    return (
        f"### Restore drill and source spot check: {nfiles} files, {nbytes / 1e6:.0f} MB, gzip; "
        f"restore and drill alternating, median of {r_runs}\n\n"
        "| command | wall s | CPU s | peak RSS MB | |\n|---|---|---|---|---|\n"
        + "\n".join(
            f"| {n} | {m['wall']:.2f} | {m['cpu']:.1f} | {m['rss_mb']:.0f} | {x} |" for n, m, x in rows
        )
        + f"\n\n{note}"
    )


# -- the idle service ----------------------------------------------------------------------------------
def bench_idle(seconds: float) -> str:
    work = Path(tempfile.mkdtemp(prefix="gofr-bench-idle-"))
    (work / "data" / "s").mkdir(parents=True)
    (work / "data" / "s" / "f").write_text("x")
    env = _env(work / "data", work / "b", PATHS="s:s", SCHEDULE="0 3 1 1 *")
    env["GOFR_BACKUP_ALLOW_ROOT"] = "true"
    p = subprocess.Popen(
        [sys.executable, "-m", "gofr_common.backup", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(5)  # start-up: config, housekeeping, the first catch-up backup

    def cpu() -> float:
        f = Path(f"/proc/{p.pid}/stat").read_text().split(")")[-1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    c0, t0 = cpu(), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu(), time.monotonic()
    rss = next(ln for ln in Path(f"/proc/{p.pid}/status").read_text().splitlines() if ln.startswith("VmRSS"))
    p.send_signal(signal.SIGTERM)
    p.wait(30)
    shutil.rmtree(work, ignore_errors=True)
    pct = 100 * (c1 - c0) / (t1 - t0)
    return (
        f"### The idle service\n\n| measured over | CPU | RSS |\n|---|---|---|\n"
        f"| {seconds:.0f} s | {pct:.3f} % | {int(rss.split()[1]) / 1024:.0f} MB |"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="throughput,memory,ops,idle,sqlite,drill,days30")
    ap.add_argument("--mb", type=int, default=1170)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--slow-mb", type=int, default=120, help="data set size for bzip2 and xz (slow codecs)")
    ap.add_argument("--big-mb", type=int, default=4680, help="the large set of the memory comparison")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--db-mb", type=int, default=100)
    ap.add_argument("--days", type=int, default=30, help="days30: scheduled runs")
    ap.add_argument("--churn", type=float, default=0.01, help="days30: share of the files changed a day")
    ap.add_argument("--days-mb", type=int, help="days30: data set size (default: --mb)")
    ap.add_argument("--days-codec", default="zstd", help="days30: codec of both our arms (level 3)")
    ap.add_argument(
        "--db-daily", action="store_true", help="days30: update the SQLite database every day too"
    )
    a = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    only = a.only.split(",")
    parts = []
    if "throughput" in only:
        table, chart = bench_throughput(a.mb, a.runs, a.slow_mb)
        parts.append(table + "\n\n" + write_chart(chart, RESULTS / "throughput.png"))
    if "memory" in only:
        parts.append(bench_memory(a.mb, a.big_mb))
    if "ops" in only:
        parts.append(bench_ops(a.runs))
    if "idle" in only:
        parts.append(bench_idle(30.0))
    if "sqlite" in only:
        parts.append(bench_sqlite(a.seconds, a.db_mb))
    if "drill" in only:
        parts.append(bench_drill(a.mb, a.runs))
    if "days30" in only:
        import days30

        table = days30.run(a.days_mb or a.mb, a.days, a.churn, a.days_codec, 3, db_daily=a.db_daily)
        (RESULTS / "days30.md").write_text(table + "\n")
        parts.append(table)
    text = "\n\n".join(parts) + "\n"
    name = "results.md" if len(only) > 1 else f"{only[0]}.md"
    (RESULTS / name).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
