"""The history report: one self-contained HTML file (inline SVG charts by pygal, inline CSS, no
script, no external asset), readable offline.

At the top, health at a glance; then charts over time per tier (archive size, source size,
duration, throughput) and of restore-drill times; then a table of every archive with its
verification, drill and warnings. Every text that comes from the data (file names in warnings,
error messages) is escaped; a Content-Security-Policy forbids scripts and any fetch.
"""

from __future__ import annotations

import html
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from .cli import human_size
from .config import BackupConfig
from .layout import TIERS
from .metrics import drills, entries_of, ts

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
TIER_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c")
MAX_WARNINGS_SHOWN = 50
MAX_CHARTED = 1000  # archives drawn in the charts (newest first); the table lists every one
_SCRIPT_RE = re.compile(r"<script\b[^>]*>.*?</script>", re.S | re.I)

CSS = """
body{font-family:DejaVu Sans,Verdana,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}
.sub{color:#666;font-size:13px}
.health{border-radius:8px;padding:12px 16px;margin:16px 0;font-size:15px}
.ok{background:#e6f4ea;border:1px solid #34a853}.bad{background:#fce8e6;border:1px solid #d93025}
.health b.state{font-size:20px}.health ul{margin:6px 0 0 18px;padding:0}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:10px 0 0;font-size:14px}
dl.facts dt{color:#555}dl.facts dd{margin:0}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:12px}
figure{margin:0;border:1px solid #ddd;border-radius:6px;padding:4px}
figure svg{width:100%;height:auto;display:block}
figcaption{font-size:13px;color:#555;padding:2px 6px}
table{border-collapse:collapse;width:100%;font-size:12px}
th,td{border-bottom:1px solid #e3e3e3;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f5f5f5;position:sticky;top:0}td.n{text-align:right;white-space:nowrap}td.name{white-space:nowrap}
.fail{color:#d93025;font-weight:bold}.warn{color:#b06000}.good{color:#188038}
details summary{cursor:pointer}.note{color:#666;font-style:italic}
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _when(iso: str | None) -> datetime | None:
    t = ts(iso)
    return datetime.fromisoformat(iso) if t is not None and iso else None


def _rate(e: dict[str, Any]) -> float | None:
    """Source bytes per second."""
    src, dur = e.get("source_bytes"), e.get("duration_s")
    if not isinstance(src, int | float) or not isinstance(dur, int | float) or dur <= 0:
        return None
    return float(src) / dur


def _throughput(e: dict[str, Any]) -> float | None:
    r = _rate(e)
    return r / 1e6 if r is not None else None


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) else None


# (title, unit of the values, value of an entry); byte units are scaled to the data (KB … TB)
CHARTS: list[tuple[str, str, Any]] = [
    ("Archive size", "B", lambda e: _num(e.get("size_bytes"))),
    ("Source size", "B", lambda e: _num(e.get("source_bytes"))),
    ("Duration", "s", lambda e: _num(e.get("duration_s"))),
    ("Throughput", "B/s", _rate),
]


def _scaled(unit: str, series: list[tuple[str, list[tuple[datetime, float, str]]]]) -> tuple[str, list[Any]]:
    """Byte values in the unit that suits the largest (B, KB, MB, GB, TB; powers of 1000)."""
    if not unit.startswith("B"):
        return unit, series
    top = max((v for _, pts in series for _, v, _ in pts), default=0.0)
    div, prefix = 1.0, ""
    for p in ("K", "M", "G", "T"):
        if top < div * 1000:
            break
        div, prefix = div * 1000, p
    return prefix + unit, [(n, [(t, v / div, label) for t, v, label in pts]) for n, pts in series]


def _style(colors: tuple[str, ...]) -> Any:
    from pygal.style import Style

    return Style(
        background="white",
        plot_background="white",
        foreground="#333",
        foreground_strong="#222",
        foreground_subtle="#ccc",
        colors=colors,
        font_family="DejaVu Sans, Verdana, sans-serif",
        label_font_size=11,
        major_label_font_size=11,
        legend_font_size=12,
        title_font_size=14,
    )


def chart_svg(
    title: str,
    unit: str,
    series: list[tuple[str, list[tuple[datetime, float, str]]]],
    colors: tuple[str, ...] = TIER_COLOURS,
    stroke: bool = True,
) -> str:
    """One pygal DateTimeLine as an inline <svg> (pygal's config script removed: the page runs no
    script). ``series`` is (name, [(time, value, label)])."""
    import pygal

    chart = pygal.DateTimeLine(
        title=f"{title} ({unit})",
        style=_style(colors),
        stroke=stroke,
        width=560,
        height=300,
        js=[],
        disable_xml_declaration=True,
        show_dots=True,
        dots_size=2.5,
        stroke_style={"width": 1.5},
        x_label_rotation=25,
        x_value_formatter=lambda d: d.strftime("%Y-%m-%d"),
        value_formatter=lambda v: f"{v:.3g}",
        truncate_legend=-1,
        legend_at_bottom=True,
        legend_at_bottom_columns=max(1, len(series)),  # pygal sizes the margin by order // columns
        x_labels_major_count=6,
        show_minor_x_labels=False,
        margin=8,
    )
    for name, points in series:
        chart.add(
            name,
            [{"value": (t, v), "label": label} for t, v, label in sorted(points, key=lambda p: p[0])],
        )
    svg = str(chart.render(is_unicode=True))
    return _SCRIPT_RE.sub("", svg)


def _charts(entries: list[dict[str, Any]], drill_list: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for title, unit, fn in CHARTS:
        series = []
        for tier in TIERS:
            pts = []
            for e in entries:
                if e.get("tier") != tier:
                    continue
                t, v = _when(e.get("created")), fn(e)
                if t is not None and v is not None:
                    pts.append((t, v, str(e.get("filename", ""))))
            if pts:
                series.append((tier, pts))
        if series:
            shown, series = _scaled(unit, series)
            out.append((title, chart_svg(title, shown, series)))
        else:
            out.append((title, ""))
    ok: list[tuple[datetime, float, str]] = []
    bad: list[tuple[datetime, float, str]] = []
    for d in drill_list:
        t, v = _when(d.get("at")), _num(d.get("restore_seconds"))
        if t is not None and v is not None:
            (ok if d.get("ok") else bad).append((t, v, "ok" if d.get("ok") else f"FAILED: {d.get('error')}"))
    named = [(n, p, c) for n, p, c in (("restored", ok, "#188038"), ("failed", bad, "#d93025")) if p]
    svg = chart_svg(
        "Restore drill time", "s", [(n, p) for n, p, _ in named], tuple(c for *_, c in named), False
    )
    out.append(("Restore drill time", svg if named else ""))
    return out


def _short(iso: Any) -> str:
    t = _when(iso) if isinstance(iso, str) else None
    return t.strftime("%Y-%m-%d %H:%M") if t else str(iso)


def _verified(e: dict[str, Any]) -> str:
    v = e.get("verified")
    if v is True:
        s = f'<span class="good" title="{_e(e.get("verified_at") or "")}">verified</span>'
    elif v is False:
        s = f'<span class="fail">FAILED</span>: {_e(e.get("verify_error"))}'
    else:
        s = '<span class="note">not verified</span>'
    if e.get("complete") is False:
        s += ' <span class="fail">INCOMPLETE</span>'
    return s


def _drill(e: dict[str, Any]) -> str:
    d = e.get("drill")
    if not isinstance(d, dict):
        return '<span class="note">-</span>'
    secs = d.get("restore_seconds")
    took = f" in {secs:.1f} s" if isinstance(secs, int | float) else ""
    if d.get("ok"):
        return f'<span class="good" title="{_e(d.get("at"))}">restored</span>{_e(took)}'
    return f'<span class="fail">FAILED</span> {_e(d.get("at"))}: {_e(d.get("error"))}'


def _warnings(e: dict[str, Any]) -> str:
    ws = [str(w) for w in (e.get("warnings") or [])]
    if not ws:
        return ""
    items = "".join(f"<li>{_e(w)}</li>" for w in ws[:MAX_WARNINGS_SHOWN])
    more = f"<li>… and {len(ws) - MAX_WARNINGS_SHOWN} more</li>" if len(ws) > MAX_WARNINGS_SHOWN else ""
    return f'<details><summary class="warn">{len(ws)} warning(s)</summary><ul>{items}{more}</ul></details>'


def _table(entries: list[dict[str, Any]]) -> str:
    rows = []
    for e in sorted(entries, key=lambda e: (str(e.get("created")), str(e.get("tier"))), reverse=True):
        tp = _throughput(e)
        dur = e.get("duration_s")
        rows.append(
            "<tr>"
            f'<td>{_e(e.get("tier"))}</td><td class="name">{_e(e.get("filename"))}</td>'
            f'<td class="n" title="{_e(e.get("created"))}">{_e(_short(e.get("created")))}</td>'
            f'<td class="n">{_e(human_size(e.get("size_bytes")))}</td>'
            f'<td class="n">{_e(human_size(e.get("source_bytes")))}</td>'
            f'<td class="n">{_e(e.get("file_count"))}</td>'
            f'<td class="n">{_e(f"{dur:.1f} s" if isinstance(dur, int | float) else "-")}</td>'
            f'<td class="n">{_e(f"{tp:.1f} MB/s" if tp is not None else "-")}</td>'
            f"<td>{_verified(e)}</td><td>{_drill(e)}</td><td>{_warnings(e)}</td>"
            "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "Tier",
            "Archive",
            "Created",
            "Size",
            "Source",
            "Files",
            "Duration",
            "Throughput",
            "Verification",
            "Restore drill",
            "Warnings",
        )
    )
    body = "".join(rows) or '<tr><td colspan="11" class="note">no archives yet</td></tr>'
    return f'<table id="archives"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _health(h: Any, st: dict[str, Any], drill_list: list[dict[str, Any]], now: datetime) -> str:
    from .cli import human_age

    r = h.report
    facts: list[tuple[str, str]] = []
    ls, lf = r.get("last_success"), r.get("last_failure")
    facts.append(
        (
            "Last success",
            f"{_e(_short(ls['time']))} ({_e(human_age(ls['time'], now))}), {_e(ls.get('filename'))}, "
            f"{_e(human_size(ls.get('size_bytes')))}"
            if ls
            else "never",
        )
    )
    facts.append(("Last failure", f"{_e(lf.get('time'))}: {_e(lf.get('error'))}" if lf else "none"))
    facts.append(("Next run", _e(r.get("next_run") or "-")))
    if r.get("remote"):
        rm = r["remote"]
        facts.append(
            ("Off-site", f"{_e(rm.get('url'))}: last upload {_e(rm.get('last_success') or 'never')}")
        )
    if drill_list:
        d = drill_list[-1]
        facts.append(
            (
                "Last restore drill",
                f"{_e(d.get('at'))}: " + ("ok" if d.get("ok") else f"FAILED: {_e(d.get('error'))}"),
            )
        )
    for key, label in (("notify", "Notifications"), ("ping", "Pings"), ("metrics", "Metrics file")):
        err = st.get(f"{key}_last_error")
        if isinstance(err, dict) and str(err.get("time", "")) > str(st.get(f"{key}_last_ok", "")):
            facts.append((label, f'<span class="fail">failing</span>: {_e(err.get("error"))}'))
    reasons = "".join(f"<li>{_e(x)}</li>" for x in h.reasons)
    state = "HEALTHY" if h.healthy else "UNHEALTHY"
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return (
        f'<section class="health {"ok" if h.healthy else "bad"}" id="health"><b class="state">{state}</b>'
        + (f"<ul>{reasons}</ul>" if reasons else "")
        + f'<dl class="facts">{dl}</dl></section>'
    )


def render(
    config: BackupConfig, entries: list[dict[str, Any]], state: dict[str, Any], health: Any, now: datetime
) -> str:
    """The report as one HTML string, from plain inputs."""
    mine = [e for e in entries if e.get("project") == config.project]
    drill_list = drills(mine, state)
    charted = sorted(mine, key=lambda e: str(e.get("created")))[-MAX_CHARTED:]
    charts = _charts(charted, drill_list[-MAX_CHARTED:])
    figs = []
    for title, svg in charts:
        body = svg or f'<p class="note">{_e(title)}: no data yet</p>'
        figs.append(
            f'<figure class="chart" data-chart="{_e(title)}">{body}<figcaption>{_e(title)}</figcaption></figure>'
        )
    tiers = ", ".join(f"{t} {sum(1 for e in mine if e.get('tier') == t)}" for t in TIERS)
    total = sum(int(e.get("size_bytes") or 0) for e in mine)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>gofr-backup: {_e(config.project)}</title><style>{CSS}</style></head><body>"
        f"<h1>Backups of {_e(config.project)}</h1>"
        f'<div class="sub">{_e(config.backup_dir)} · report made {_e(now.isoformat(timespec="seconds"))} · '
        f"{len(mine)} archive(s) ({_e(tiers)}), {_e(human_size(total))}</div>"
        + _health(health, state, drill_list, now)
        + "<h2>Over time</h2>"
        + (
            f'<p class="note">The charts show the newest {len(charted)} of {len(mine)} archives; the table '
            "lists them all.</p>"
            if len(charted) < len(mine)
            else ""
        )
        + '<div class="charts">'
        + "".join(figs)
        + "</div><h2>Every archive</h2>"
        + _table(mine)
        + "</body></html>\n"
    )


def build(config: BackupConfig, now: datetime) -> str:
    from .health import health
    from .state import read_state

    return render(config, entries_of(config), read_state(config), health(config, now), now)


def write_report(config: BackupConfig, path: Path, now: datetime) -> None:
    from .fsutil import atomic_write_bytes

    atomic_write_bytes(path, build(config, now).encode("utf-8"))
