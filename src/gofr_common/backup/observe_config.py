"""The variables of notifications, pings, metrics and the report: parsed and validated here, so
that config.py only calls ``parse``. URLs hold tokens: no error line and no log line shows one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

NOTIFY_EVENTS = ("failure", "warning", "recovery", "success", "drill", "remote")
OFF_WORDS = {"", "off", "false", "no", "none", "0"}
# apprise schemas whose host and path are plain addresses, where a token can hide in the path
_GENERIC = {"json", "jsons", "xml", "xmls", "form", "forms"}


def _scheme(url: str) -> str:
    m = re.match(r"^\s*([A-Za-z][A-Za-z0-9+.-]*)://", url)
    return m.group(1).lower() if m else ""


def _shown(url: str) -> str:
    """What an error line may show of a URL: its scheme, never the rest."""
    s = _scheme(url)
    return f"{s}://…" if s else "not a URL"


def redact_url(url: str) -> str:
    """A URL with its secrets hidden, for logs, ``config`` and the state file."""
    s = _scheme(url)
    if s in ("http", "https"):
        parts = urlsplit(url.strip())
        host = parts.hostname or "?"
        port = f":{parts.port}" if _port_ok(parts) and parts.port else ""
        return f"{s}://{host}{port}/***" if parts.path.strip("/") or parts.query else f"{s}://{host}{port}"
    try:
        import apprise

        quiet_apprise()
        p = apprise.Apprise.instantiate(url)
    except Exception:  # noqa: BLE001 - any failure: show nothing but the scheme
        p = None
    if p is None:
        return _shown(url)
    shown = str(p.url(privacy=True)).split("?", 1)[0]
    if s in _GENERIC:
        parts = urlsplit(shown)
        host = parts.hostname or "?"
        port = f":{parts.port}" if _port_ok(parts) and parts.port else ""
        return f"{s}://{host}{port}" + ("/***" if parts.path.strip("/") else "")
    return shown


def _port_ok(parts: Any) -> bool:
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
        return True
    except ValueError:
        return False


def secret_words(url: str) -> list[str]:
    """The pieces of a URL that may be secret, to scrub from a library's error text: all but what
    its redacted form shows anyway (the scheme, a plain host)."""
    body = url.split("://", 1)[-1]
    shown = set(re.split(r"[/:@?&=#,]+", redact_url(url)))
    words = {w for w in re.split(r"[/:@?&=#,]+", body) if len(w) >= 4 and w not in shown}
    return sorted(words, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    for w in secret_words(url):
        text = text.replace(w, "***")
    return text


def _bad_url(var: str, i: int, n: int, url: str) -> ConfigError:
    return ConfigError(
        f"{var}: URL {i} of {n} ({_shown(url)}) is not a valid apprise URL: expected e.g. "
        "mailto://user:pass@host, slack://…, tgram://bottoken/chatid, ntfys://host/topic, "
        "json://host/path (URLs are comma-separated)"
    )


def parse_notify_urls(var: str, raw: str | None) -> tuple[str, ...]:
    """The URLs, checked for their form only: loading apprise's plugins takes about a second, too
    much for every `status` (the HEALTHCHECK). ``check_notify_urls`` asks apprise itself, before
    anything is sent."""
    if not raw or not raw.strip():
        return ()
    items = [u.strip() for line in raw.splitlines() for u in line.split(",")]
    urls = [u for u in items if u and not u.startswith("#")]
    for i, u in enumerate(urls, 1):
        if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$", u):
            raise _bad_url(var, i, len(urls), u)
    return tuple(urls)


def quiet_apprise() -> None:
    """apprise logs through its own logger; nothing of it may reach stderr by the root logger's
    last-resort handler (it can name a host or a token)."""
    import logging

    lg = logging.getLogger("apprise")
    lg.propagate = False
    if not lg.handlers:
        lg.addHandler(logging.NullHandler())


def check_notify_urls(config: Any) -> None:
    """Ask apprise whether each NOTIFY_URLS entry is one of its URLs; ConfigError if not. Called
    by the commands that send (observe.Observer) and by `config`."""
    urls = config.notify_urls
    if not urls:
        return
    import apprise

    quiet_apprise()
    for i, u in enumerate(urls, 1):
        try:
            ok = apprise.Apprise.instantiate(u) is not None
        except Exception:  # noqa: BLE001 - apprise raises its own types
            ok = False
        if not ok:
            raise _bad_url(config.prefix + "NOTIFY_URLS", i, len(urls), u)


def parse_notify_on(var: str, raw: str) -> tuple[str, ...]:
    words = [w.strip().lower() for w in raw.split(",") if w.strip()]
    bad = [w for w in words if w not in NOTIFY_EVENTS]
    if bad:
        raise ConfigError(
            f"{var}={raw!r} is not valid: {bad[0]!r} is not an event; expected any of "
            + ", ".join(NOTIFY_EVENTS)
            + " (comma-separated)"
        )
    return tuple(dict.fromkeys(words))


def parse_ping_url(var: str, raw: str | None) -> str | None:
    if not raw or not raw.strip():
        return None
    u = raw.strip()
    parts = urlsplit(u)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not _port_ok(parts)
        or re.search(r"\s", u)
        or parts.fragment
    ):
        raise ConfigError(
            f"{var} ({_shown(u)}) is not valid: expected an http:// or https:// URL without spaces, "
            "e.g. https://hc-ping.com/<uuid>"
        )
    return u.rstrip("/")


def parse_metrics_file(var: str, raw: str, backup_dir: Path) -> Path | None:
    v = raw.strip()
    if not v:
        return None
    if not v.endswith(".prom") or "\x00" in v:
        raise ConfigError(
            f"{var}={raw!r} is not valid: expected a file name ending in .prom (node_exporter's "
            "textfile collector reads only *.prom), e.g. /textfile/gofr-backup.prom"
        )
    p = Path(v)
    return p if p.is_absolute() else backup_dir / p


def parse_metrics_addr(var: str, raw: str) -> tuple[str, int] | None:
    v = raw.strip()
    if not v:
        return None
    m = re.match(r"^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]*)):(\d{1,5})$", v) or re.match(
        r"^()()(\d{1,5})$", v
    )
    port = int(m.group(3)) if m else 0
    if not m or not 1 <= port <= 65535:
        raise ConfigError(
            f"{var}={raw!r} is not valid: expected host:port with a port from 1 to 65535, "
            "e.g. 0.0.0.0:9877, 127.0.0.1:9877, [::]:9877 or :9877"
        )
    host = m.group(1) or m.group(2) or "0.0.0.0"
    return host, port


def addr_text(addr: tuple[str, int]) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def parse_report_file(var: str, raw: str, backup_dir: Path) -> Path | None:
    v = raw.strip()
    if v.lower() in OFF_WORDS:
        return None
    if "\x00" in v or not v.lower().endswith((".html", ".htm")):
        raise ConfigError(
            f"{var}={raw!r} is not valid: expected a file name ending in .html, e.g. report.html, or off"
        )
    p = Path(v)
    return p if p.is_absolute() else backup_dir / p


def parse_timeout(var: str, raw: str, parse_duration: Callable[[str, str], float]) -> float:
    t = parse_duration(var, raw)
    if t > 300:
        raise ConfigError(f"{var}={raw!r} is not valid: expected at most 300 seconds (5m)")
    return t


def parse(
    get: Callable[[str], tuple[str, str]], secret: Callable[[str], str | None], backup_dir: Path
) -> dict[str, Any]:
    """The BackupConfig fields of this feature, from ``get(NAME) -> (variable, value)``."""
    from .config import parse_duration

    def from_file_too(name: str) -> str | None:
        """The value, or the _FILE's content; a _FILE that holds nothing is an error, not "off"."""
        v = secret(name)
        fvar, fpath = get(name + "_FILE")
        if fpath.strip() and not re.sub(r"(?m)^\s*#.*$", "", v or "").strip():
            raise ConfigError(f"{fvar}={fpath!r} is not valid: the file holds no URL")
        return v

    return {
        "notify_urls": parse_notify_urls(get("NOTIFY_URLS")[0], from_file_too("NOTIFY_URLS")),
        "notify_on": parse_notify_on(*get("NOTIFY_ON")),
        "notify_timeout": parse_timeout(*get("NOTIFY_TIMEOUT"), parse_duration),
        "ping_url": parse_ping_url(get("PING_URL")[0], from_file_too("PING_URL")),
        "metrics_file": parse_metrics_file(*get("METRICS_FILE"), backup_dir),
        "metrics_addr": parse_metrics_addr(*get("METRICS_ADDR")),
        "report_file": parse_report_file(*get("REPORT_FILE"), backup_dir),
    }
