"""Heartbeat pings, the healthchecks.io convention (which Uptime Kuma and others accept):
``{url}/start`` when a run starts (GET), ``{url}`` on success and ``{url}/fail`` on failure (POST,
with the run's last log lines as the body). A ``rid`` query parameter ties a start to its end.

Each ping is bounded: at most ``ATTEMPTS`` tries, each with the time left of one overall timeout.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from urllib.parse import urlencode, urlsplit, urlunsplit

from .observe_config import redact_url, scrub

ATTEMPTS = 3
MAX_BODY = 10_000  # healthchecks keeps the first 100 kB; the tail of a run's log is what matters


def ping_url(base: str, kind: str, rid: str | None) -> str:
    """``kind`` is start, success or fail; the suffix goes on the path, before any query."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/") + {"start": "/start", "fail": "/fail", "success": ""}[kind]
    query = parts.query
    if rid:
        query = (query + "&" if query else "") + urlencode({"rid": rid})
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def send(base: str, kind: str, body: str | None, timeout: float, rid: str | None = None) -> str | None:
    """One ping, retried on connection errors and 5xx within ``timeout`` seconds in all. None, or
    why it failed (the URL redacted)."""
    url = ping_url(base, kind, rid)
    data = body.encode("utf-8", "replace")[-MAX_BODY:] if body is not None else None
    deadline = time.monotonic() + timeout
    why = "not sent"
    for attempt in range(ATTEMPTS):
        left = deadline - time.monotonic()
        if left <= 0.05:
            break
        req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
        req.add_header("User-Agent", "gofr-backup")
        if data is not None:
            req.add_header("Content-Type", "text/plain; charset=utf-8")
        try:
            with urllib.request.urlopen(req, timeout=left) as r:
                r.read(1024)
            return None
        except urllib.error.HTTPError as e:
            why = f"HTTP {e.code} {e.reason}"
            if e.code < 500:
                break  # a wrong URL does not get better by asking again
        except (OSError, ValueError) as e:
            why = str(getattr(e, "reason", None) or e) or type(e).__name__
        if attempt + 1 < ATTEMPTS:
            time.sleep(min(0.5 * 2**attempt, max(0.0, deadline - time.monotonic())))
    return f"{kind} ping to {redact_url(base)} failed: {scrub(why, base)}"
