"""The history report, rendered by a real browser (headless Chromium, the Debian package): it loads
without a console error or a blocked request, each chart's SVG holds one point per archive, the
screenshot is not blank, and names and warnings from the data cannot inject markup."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from gofrtest import REPO, cli_env, needs, run_cli, write

EVIL = '<img src=x onerror="document.title=1"><script>document.title=2</script>'


def history(n: int) -> list[dict[str, Any]]:
    """n daily archives over n days, a weekly copy every Monday and a monthly one every 1st, a
    restore drill every 7th day (every 3rd of them failed), one incomplete with hostile warnings."""
    t0 = datetime(2026, 9, 1, 2, 0, tzinfo=UTC)
    out = []
    for i in range(n):
        t = t0 + timedelta(days=i)
        src = 1_200_000_000 + i * 8_000_000 + (i * 7919 % 50) * 1_000_000
        name = f"gofr-plot_daily_{t:%Y%m%d_%H%M%S}.tar.gz"
        e: dict[str, Any] = {
            "project": "plot",
            "filename": name,
            "path": f"daily/{name}",
            "tier": "daily",
            "created": t.isoformat(),
            "size_bytes": int(src * (0.62 + (i % 5) / 200)),
            "sha256": "0" * 64,
            "compression": "gzip",
            "verified": True,
            "verified_at": (t + timedelta(minutes=1)).isoformat(),
            "verify_error": None,
            "file_count": 84_000 + 10 * i,
            "source_bytes": src,
            "duration_s": 14.0 + (i % 9) / 2,
            "warnings": [],
            "complete": True,
            "trigger": "schedule",
        }
        if i % 7 == 3:
            ok = i % 21 != 10
            e["drill"] = {
                "at": (t + timedelta(hours=1)).isoformat(),
                "ok": ok,
                "error": None if ok else f"checksum mismatch {EVIL}",
                "restore_seconds": 18.0 + (i % 5) / 3,
                "files": e["file_count"],
                "bytes": src,
            }
        if i == 5:
            e["complete"] = False
            e["warnings"] = [f"storage/{EVIL}.txt could not be read (Permission denied); skipped"]
        out.append(e)
        for tier, when in (("weekly", t.weekday() == 0), ("monthly", t.day == 1)):
            if when:
                copy = {k: v for k, v in e.items() if k != "drill"}
                copy["tier"], copy["filename"] = tier, name.replace("_daily_", f"_{tier}_")
                copy["path"] = f"{tier}/{copy['filename']}"
                out.append(copy)
    return out


class Tags(HTMLParser):
    """Every element and attribute of a page, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.append(tag)
        self.attrs += attrs


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="gofr-chromium-") as profile:
        return subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--enable-logging=stderr",
                "--v=0",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )


def test_report_in_a_real_browser(tmp_path: Path) -> None:
    needs(bool(shutil.which("chromium")), "needs chromium (apt-get install chromium)")
    backups = tmp_path / "backups"
    entries = history(60)
    write(backups / "manifest.json", json.dumps({"format": 1, "backups": entries}))
    env = cli_env(tmp_path / "data", backups)
    out = tmp_path / "report.html"
    r = run_cli("report", "--output", str(out), env=env)
    assert r.returncode == 0, r.stderr
    page = out.read_text()

    # self-contained: no script, no stylesheet or image to fetch, nothing but inline SVG and CSS
    tags = Tags()
    tags.feed(page)
    assert "script" not in tags.names and "link" not in tags.names and "img" not in tags.names
    assert tags.names.count("svg") == 5
    assert [a for a in tags.attrs if a[0] in ("src", "href", "xlink:href", "action", "srcset")] == []
    assert not any("url(" in (v or "") for _, v in tags.attrs)

    dom = chromium("--dump-dom", f"file://{out}")
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the page loaded without a console error or anything blocked by its Content-Security-Policy
    noise = [
        ln
        for ln in dom.stderr.splitlines()
        if "CONSOLE" in ln or "Content Security Policy" in ln or "Uncaught" in ln
    ]
    assert noise == [], noise
    html = dom.stdout
    assert "<img" not in html and "<script" not in html  # the hostile names stayed text
    assert "&lt;img src=x onerror" in html

    figures = dict(re.findall(r'<figure class="chart" data-chart="([^"]+)">(.*?)</figure>', html, re.S))
    assert set(figures) == {"Archive size", "Source size", "Duration", "Throughput", "Restore drill time"}
    for title, fig in figures.items():
        assert fig.count("<svg") == 1, title
        dots = len(re.findall(r'<circle[^>]*class="dot\b', fig))
        want = sum(1 for e in entries if "drill" in e) if title == "Restore drill time" else len(entries)
        assert dots == want, f"{title}: {dots} points for {want}"
        # and per tier: each series (one per tier) holds that tier's archives
        if title != "Restore drill time":
            series = re.findall(r'<g class="series serie-\d+ color-\d+">(.*?)</g></g>', fig, re.S)
            per = sorted(
                n for n in (len(re.findall(r"<circle", s)) for s in series) if n
            )  # (+ empty overlays)
            assert per == sorted(
                sum(1 for e in entries if e["tier"] == t) for t in ("daily", "weekly", "monthly")
            )
    assert len(re.findall(r"<tr>", html.split("<tbody>", 1)[1])) == len(entries)  # a row per archive
    assert "UNHEALTHY" in html and "INCOMPLETE" in html and "FAILED" in html

    png = tmp_path / "report.png"
    shot = chromium(f"--screenshot={png}", "--window-size=1200,1400", f"file://{out}")
    assert shot.returncode == 0 and png.stat().st_size > 10_000, shot.stderr[-2000:]
    from PIL import Image

    im = Image.open(png).convert("RGB")
    grey = im.convert("L").histogram()
    not_white = sum(grey[:235]) / (im.width * im.height)
    colours = len(im.getcolors(im.width * im.height) or [])
    assert im.size == (1200, 1400) and not_white > 0.05 and colours > 50, (not_white, colours)


def test_now_refreshes_the_report_and_it_can_be_off(tmp_path: Path) -> None:
    data, backups = tmp_path / "data", tmp_path / "backups"
    write(data / "storage" / "a.txt", "a")
    env = cli_env(data, backups, **{"GOFR_{P}_BACKUP_PATHS": "storage:storage"})
    assert run_cli("now", env=env).returncode == 0
    assert run_cli("now", env=env).returncode == 0
    page = (backups / "report.html").read_text()
    names = [e["filename"] for e in json.loads((backups / "manifest.json").read_text())["backups"]]
    assert len(names) == 2 and all(n in page for n in names) and "HEALTHY" in page
    assert page.count('class="dot') >= 4 * 2
    stdout = run_cli("report", env=env)  # default: stdout
    assert (
        stdout.returncode == 0 and stdout.stdout.startswith("<!DOCTYPE html>") and names[0] in stdout.stdout
    )

    (backups / "report.html").unlink()
    env["GOFR_PLOT_BACKUP_REPORT_FILE"] = "off"
    assert run_cli("now", env=env).returncode == 0
    assert not (backups / "report.html").exists()


def test_report_output_errors_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "data", tmp_path / "backups")
    for args, says in (
        (["--output", str(tmp_path / "nope" / "r.html")], "does not exist"),
        (["--output", str(tmp_path)], "is a directory"),
    ):
        r = run_cli("report", *args, env=env)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("gofr-backup: --output") and says in r.stderr
    assert not (tmp_path / "nope").exists() and not (tmp_path / "backups").exists()


def test_readme_screenshot_exists() -> None:
    png = REPO / "docs" / "report.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "docs/report.png" in (REPO / "README.md").read_text()
